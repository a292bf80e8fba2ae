"""One place per VPN protocol (issue 18): each helper declares what it is, and everything else reads the registry.

These tests hold the rest of the project to it: no list of VPN names outside
``router/helpers/`` that disagrees with the registry, no module outside the
helpers, the lab and the dashboard's packet decoder that names a protocol at
all, and a fourth protocol (``tests/toyproto.py``) that joins everything it
must through the registry alone.
"""

from __future__ import annotations

import ast
import random
import re
import tomllib
from pathlib import Path

import msgpack
import pytest
from scapy.layers.inet import IP
from scapy.packet import Raw

from router.behaviour import PROFILES, parse_rule, rule_vpns
from router.config import ConfigError, parse
from router.dataplane.contract import RouterCore
from router.dataplane.router import Router
from router.helpers import registry
from router.dataplane.natsession import Session
from router.helpers.base import SessionView
from router.helpers.registry import RegistryError
from router.helpers.spec import FlowView
from tests.fuzz import scripts
from tests.toyproto import TOY_PROTO, ToyHelper, registered
from tests.unit.frames import C1, LAN, S1, WAN, WAN_IP, config, from_lan, from_wan, make_router, step

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = ("router/helpers/", "router/lab/", "tui/decode.py")
"""Where a VPN protocol may be named: its helper, the lab's real peers, the dashboard's packet decoder."""


def python_files():
    for folder in ("router", "tui"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield path, path.relative_to(ROOT).as_posix()


# -- nothing outside the helpers names a protocol ---------------------------------------------------------

def test_only_the_helpers_the_lab_and_the_packet_decoder_name_a_protocol():
    """``grep -rli 'pptp\\|l2tp\\|ipsec' router tui --include=*.py``, as the issue words it (and for every
    registered protocol, not only L2TP)."""
    words = re.compile("|".join(registry.names()), re.IGNORECASE)
    naming = [name for path, name in python_files() if words.search(path.read_text())]
    assert naming and [name for name in naming if not name.startswith(ALLOWED)] == []


def _string_collections(tree: ast.AST):
    """Every tuple, list, set and dict-keys literal made of strings, with its line."""
    for node in ast.walk(tree):
        items = node.keys if isinstance(node, ast.Dict) else getattr(node, "elts", None) \
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else None
        if items and all(isinstance(i, ast.Constant) and isinstance(i.value, str) for i in items):
            yield node.lineno, [i.value for i in items]


def test_no_list_of_vpn_names_disagrees_with_the_registry():
    """A list that names some of the protocols must name them all, as the registry does (the lab's scenarios
    choose among them, so router/lab/ is left out)."""
    names = set(registry.names())
    wrong = []
    for path, name in python_files():
        if name.startswith("router/lab/"):
            continue
        for line, values in _string_collections(ast.parse(path.read_text())):
            vpns = set(values) & names
            if vpns and (vpns != names or set(values) - names - {"any"}):
                wrong.append(f"{name}:{line} {values}")
    assert wrong == []


def test_the_readmes_configuration_lists_every_protocol_and_timeout():
    """The README's sample configuration: a ``[passthrough]`` key per protocol, each helper's timeouts and
    options, and nothing the registry does not have."""
    text = (ROOT / "README.md").read_text()
    sample = text[text.index("```toml", text.index("## Running the router")) + 7:]
    document = tomllib.loads(sample[:sample.index("```")])
    assert set(document["passthrough"]) == set(registry.names())
    timeouts = {t.key for cls in registry.helper_classes() for t in cls.timeouts}
    assert timeouts <= set(document["timeouts"])
    for cls in registry.helper_classes():
        assert set(document.get(cls.name, {})) == {o.key for o in cls.options}, cls.name
    parse(document)


# -- what each helper declares ----------------------------------------------------------------------------

def test_every_helper_declares_what_it_is_and_shares_nothing():
    classes = registry.helper_classes()
    for cls in classes:
        registry.check(cls, classes)
        assert isinstance(cls.view, FlowView) and cls.view.client in cls.view.fields
        assert cls.view.server in cls.view.fields and set(cls.view.fixed) <= set(cls.view.fields)
        msgpack.unpackb(msgpack.packb(cls.description()))     # plain values only
    assert [d["name"] for d in registry.descriptions()] == list(registry.names())


@pytest.mark.parametrize("change, words", [
    ({"name": "pptp"}, "name 'pptp'"), ({"key": "p"}, "key 'p'"), ({"name": "any"}, "reserved"),
    ({"key": "P"}, "lower-case letter"), ({"timeouts": ToyHelper.timeouts + registry.REGISTRY["pptp"].timeouts},
                                          "timeout 'gre'"),
    ({"drop_reasons": ("gre_no_call",)}, "counter 'drop_gre_no_call'"), ({"ip_protocols": (47,)}, "IP protocol 47"),
    ({"view": None}, "view"),
])
def test_a_helper_that_would_clash_is_refused_by_name(change, words):
    clashing = type("Clashing", (ToyHelper,), change)
    with pytest.raises(RegistryError, match=re.escape(words)):
        registry.register(clashing)
    assert "toy" not in registry.names() and len(registry.names()) == 3


@pytest.mark.parametrize("target", ["pptp", "l2tp", "ike", "esp"])
def test_a_helpers_flows_have_the_proto_name_and_fields_it_declares(target):
    r = make_router()
    for n, (port, frame) in enumerate(scripts.script(target)):
        r.receive_frame(port, bytearray(frame), 1.0 + n / 100)
        for helper in r.helpers:
            for flow in helper.flows():
                info = r.flow_info(flow, 2.0).to_dict()
                assert (info["proto"], info["vpn"]) == (helper.flow_proto, helper.name)
                assert [k for k in info if k in helper.view.fields] == list(helper.view.fields)


# -- the contract between the router's parts --------------------------------------------------------------

def _declared() -> set[str]:
    names = set()
    for cls in RouterCore.__mro__:
        names |= set(getattr(cls, "__annotations__", {})) | set(vars(cls))
    return names


def test_what_helpers_may_read_of_a_session_is_what_a_session_has():
    assert set(SessionView.__annotations__) <= set(Session.__slots__)


def test_the_router_sets_every_attribute_its_parts_declare():
    r = make_router()
    missing = [name for name in RouterCore.__annotations__ if not hasattr(r, name)]
    assert missing == []


@pytest.mark.parametrize("module", ["forward", "passthrough", "restart", "views"])
def test_each_part_of_the_router_uses_only_what_is_declared_or_its_own(module):
    """The parts (``Forwarding``, ``Passthrough``...) may use of ``self`` what ``RouterCore`` declares and what
    they define themselves: nothing of another part's private state."""
    tree = ast.parse((ROOT / f"router/dataplane/{module}.py").read_text())
    part = next(node for node in tree.body if isinstance(node, ast.ClassDef))
    own = {n.name for n in part.body if isinstance(n, ast.FunctionDef)} | \
          {n.target.id for n in part.body if isinstance(n, ast.AnnAssign)}
    own |= {t.attr for n in ast.walk(part) if isinstance(n, ast.Assign) for t in n.targets
            if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"}
    used = {n.attr for n in ast.walk(part) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
            and n.value.id == "self"}
    assert used - own - _declared() == set()


# -- a fourth protocol, through the registry alone --------------------------------------------------------

def test_a_fourth_protocol_joins_the_config_the_rules_and_the_profiles():
    with registered():
        cfg = parse(config(passthrough={"toy": False}, toy={"greeting": "bye"}, timeouts={"toy": 5}))
        assert cfg.passthrough["toy"] == "off" and cfg.passthrough["pptp"] == "multi"
        assert dict(cfg.helpers["toy"].settings) == {"greeting": "bye"} and cfg.helpers["toy"].timeouts["toy"] == 5
        assert "toy" in rule_vpns() and parse_rule({"vpn": "toy", "action": "deny"}, "rule").vpn == "toy"
        for change, key in (({"toy": {"greeting": "hi"}}, "toy.greeting"), ({"toy": {"volume": 1}}, "toy.volume"),
                            ({"timeouts": {"toy": 0}}, "timeouts.toy"), ({"passthrough": {"toy": "loud"}},
                                                                          "passthrough.toy")):
            with pytest.raises(ConfigError, match=f"^{re.escape(key)}:"):
                parse(config(**change))
        r = Router(cfg, registry.build_helpers(cfg))
        assert r.switches == {"pptp": True, "l2tp": True, "ipsec": True, "toy": False}
        assert r.set_profile("basic-home", 1.0)["profile"] == "basic-home" and r.modes["toy"] == "single"
        assert PROFILES["strict"].passthrough == "off"
    with pytest.raises(ConfigError, match="^passthrough.toy:"):
        parse(config(passthrough={"toy": True}))          # gone with its registration


def test_a_fourth_protocol_forwards_expires_and_survives_a_restart():
    with registered():
        r = make_router(timeouts={"toy": 5})
        (out,) = step(r, LAN, from_lan(C1, S1, Raw(b"\x07out"), proto=TOY_PROTO), 1.0)[WAN]
        assert out[IP].src == WAN_IP and r.counters["toy_hops"] == 1
        (back,) = step(r, WAN, from_wan(S1, Raw(b"\x07in"), proto=TOY_PROTO), 2.0)[LAN]
        assert back[IP].dst == C1
        assert step(r, WAN, from_wan(S1, Raw(b"\x08in"), proto=TOY_PROTO), 2.0)[LAN] == []
        assert r.counters["drop_toy_no_hop"] == 1
        (info,) = [i.to_dict() for i in r.session_infos(2.0)]
        assert (info["vpn"], info["proto"], info["tag"], info["client"]) == ("toy", "toy", 7, C1)
        again = Router(r.config, registry.build_helpers(r.config), rng=random.Random(1))
        restored = again.restore(msgpack.unpackb(msgpack.packb(r.state_records())), 3.0)
        assert restored.counts == {"toy hop": 1} and [f.tag for f in again.helper_named["toy"].flows()] == [7]
        r.handle_timer(7.5)                                  # idle past [timeouts] toy = 5 s
        assert r.session_infos(7.5) == [] and r.helper_named["toy"].tables() == {"live": {}, "out": {},
                                                                                 "inbound": {}}
