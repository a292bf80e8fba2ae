"""The protocols as the router describes them, without Textual: reading the descriptions, the model when they come
late, a fourth protocol no code of the dashboard knows, the keys they ask for, and no protocol named in ``tui``."""

from __future__ import annotations

import re
from pathlib import Path

from tui import format as fmt
from tui.model import Model
from tui.protocols import MODE, SWITCH, protocol_keys, read_protocols

from .samples import DESCRIPTIONS, PROTOCOLS, TOY, demo_table, nat_session, toy_hop
from .test_model import synced_model, v3_status

ROOT = Path(__file__).resolve().parents[2]
OWN_KEYS = {"slash": "Filter", "enter": "Details", "k": "Close", "c": "Pcap", "r": "Rules", "space": "Pause",
            "question_mark": "Help", "q": "Quit", "tab": "Pane", "s": "Sort", "S": "Reverse sort"}


def vpn(seq, event, flow_id, **fields):
    return {"type": "vpn", "seq": seq, "vpn": "toy", "event": event, "id": flow_id, **fields}


# -- descriptions -----------------------------------------------------------------------------------

def test_the_registrys_descriptions_read_as_the_dashboard_wrote_its_protocols_before():
    pptp, l2tp, ipsec = PROTOCOLS.values()
    assert list(PROTOCOLS) == ["pptp", "l2tp", "ipsec"]
    assert [(p.title, p.key, p.nouns) for p in PROTOCOLS.values()] == [
        ("PPTP", "p", ("call", "calls")), ("L2TP", "l", ("tunnel", "tunnels")), ("IPsec", "i", ("SA", "SAs"))]
    assert fmt.vpn_title(l2tp, 1) == "L2TP  1 tunnel  (Tunnel ID client>translated<>LNS, sessions client<>LNS)"
    assert fmt.vpn_title(ipsec, 2) == "IPsec  2 SAs  (NAT-T or raw, ESP SPIs out/in, IKE SPIs i/r)"
    assert fmt.vpn_title(pptp, 0) == "PPTP  0 calls  (Call ID client>translated<>server)"
    assert (pptp.ending_events, l2tp.ending_events, ipsec.ending_events) == ({"call_down"}, {"tunnel_down"}, set())
    assert "sessions" not in l2tp.changing and "ports" not in ipsec.changing and "natt" in ipsec.changing


def test_a_description_the_dashboard_cannot_read_is_left_out_with_a_note_and_the_others_stay():
    broken = [{"name": "bad one", "view": {"fields": []}}, {"name": "noview", "noun": ["x", "xs"]},
              {**TOY, "noun": "hops"}, {**TOY, "name": "pptp"}]
    protocols, notes = read_protocols(DESCRIPTIONS + broken)
    assert list(protocols) == ["pptp", "l2tp", "ipsec"] and protocols["pptp"] == PROTOCOLS["pptp"]
    left_out = "the router's protocol {!r} is left out: the dashboard cannot read its description ({})"
    assert notes == [left_out.format("bad one", "name 'bad one' is not a plain word"),
                     left_out.format("noview", "no view"),
                     left_out.format("toy", "noun 'hops' is not [one, several]"),
                     "the router's protocol 'pptp' is described twice: the first description is kept"]


# -- the model --------------------------------------------------------------------------------------

def test_descriptions_after_the_snapshot_sort_the_table_into_flows_and_nat_sessions():
    model = Model()
    model.link_up(0.0)
    model.subscribed(10, 0.0)
    model.load_snapshot(demo_table(), 0.0)
    model.apply_status(v3_status({"pptp": "single", "l2tp": "multi", "ipsec": "off"},
                                 {"pptp": "192.168.77.11", "l2tp": None, "ipsec": None}), now=0.0)
    model.apply_events([{"type": "vpn", "seq": 10, "vpn": "pptp", "event": "call_up", "id": 1, "peer_call_id": 34},
                        {"type": "switch_changed", "seq": 11, "name": "l2tp", "on": True, "mode": "single"}], 0.5)
    model.take_changes()
    assert model.flow_counts == {} and model.nat_count == len(demo_table())     # nothing is a flow yet
    assert model.log[-2].text == "pptp call_up id=1 peer_call_id=34"           # a name, not a title yet
    model.describe(DESCRIPTIONS, now=1.0)
    assert model.flow_counts == {"pptp": 1, "l2tp": 1, "ipsec": 2}
    assert model.nat_count == len(demo_table()) - 4 and model.take_changes().reset
    assert [model.switch_mode(name) for name in model.protocols] == ["single", "single", "off"]
    assert model.holders["pptp"] == "192.168.77.11"
    model.apply_events([{"type": "vpn", "seq": 12, "vpn": "pptp", "event": "call_down", "id": 1}], 2.0)
    assert 1 not in model.sessions and model.flow_counts["pptp"] == 0


def test_the_same_descriptions_again_change_nothing_and_none_are_a_note():
    model = synced_model()
    protocols, version = model.protocols, model.version
    model.describe(DESCRIPTIONS, now=1.0)                                       # a reconnection
    assert model.protocols is protocols and model.version == version and not model.take_changes()
    model.describe(None, now=2.0)                                               # an older router
    assert model.protocols == {} and model.flow_counts == {} and model.nat_count == len(demo_table())
    assert model.log[-1].kind == "error" and "describes no VPN protocols" in model.log[-1].text


def test_a_fourth_protocol_is_counted_merged_and_ended_by_its_description_alone():
    toy = read_protocols([TOY])[0]["toy"]
    model = synced_model(demo_table() + [toy_hop(40, path=("n1",))], helpers=DESCRIPTIONS + [TOY])
    assert list(model.protocols) == ["pptp", "l2tp", "ipsec", "toy"]
    assert model.flow_counts["toy"] == 1 and model.nat_count == len(demo_table()) - 4
    hop = model.sessions[40]
    assert fmt.vpn_cells(hop, 1000.0, toy)[1:6] == ("192.168.77.15", "198.51.100.30", "hop 7<>70 via n1",
                                                    "hopping", "")
    model.apply_events([vpn(10, "node_up", 40, node="n2", path="ignored", peer_hop_id=71, shaky=True),
                        vpn(11, "node_down", 40, node="n1")], now=1.0)
    assert fmt.protocol_ids(hop, toy) == "hop 7<>71 via n2"                      # the path is the list's alone
    assert fmt.vpn_cells(hop, 1000.0, toy)[5] == "!"                            # its view's mark
    assert model.log[-1].text == "Toy node_down id=40 node=n1"
    model.apply_events([vpn(12, "hop_down", 40), {"type": "session_opened", "seq": 13, "session": toy_hop(41)}],
                       now=2.0)
    assert 40 not in model.sessions and model.flow_ids["toy"] == {41}
    model.apply_events([{"type": "session_opened", "seq": 14, "session": nat_session(42, "toy", vpn="nope")}],
                       now=3.0)
    assert not model.sessions[42].flow                                          # no such protocol: NAT


# -- keys -------------------------------------------------------------------------------------------

def test_each_protocol_gets_its_letter_and_capital_the_letters_first():
    keys, notes = protocol_keys(read_protocols(DESCRIPTIONS + [TOY])[0], OWN_KEYS)
    assert [(k.key, k.kind, k.protocol.name) for k in keys] == [
        ("p", SWITCH, "pptp"), ("l", SWITCH, "l2tp"), ("i", SWITCH, "ipsec"), ("t", SWITCH, "toy"),
        ("P", MODE, "pptp"), ("L", MODE, "l2tp"), ("I", MODE, "ipsec"), ("T", MODE, "toy")]
    assert notes == []


def test_a_key_that_is_taken_stays_with_what_has_it():
    clashing = [{**TOY, "key": "q"}, {**TOY, "name": "toy2", "title": "Toy2", "key": "p"},
                {**TOY, "name": "toy3", "title": "Toy3", "key": "shift+x"}]
    keys, notes = protocol_keys(read_protocols(DESCRIPTIONS + clashing)[0], OWN_KEYS)
    assert [k.key for k in keys if k.protocol.name.startswith("toy")] == ["Q"]
    assert notes == ["Toy asks for the key q, which is Quit: Toy on/off has no key",
                     "Toy2 asks for the key p, which is PPTP on/off: Toy2 on/off has no key",
                     "Toy3 asks for the key 'shift+x', not one lower-case letter: its switch has no keys",
                     "Toy2 asks for the key P, which is PPTP single/multi: Toy2 single/multi has no key"]


# -- one place per protocol -------------------------------------------------------------------------

def test_no_module_of_the_dashboard_but_the_packet_decoder_names_a_protocol():
    """The protocols live in their helpers; the dashboard learns them from the router (decode.py reads packets)."""
    naming = re.compile("pptp|l2tp|ipsec", re.IGNORECASE)
    found = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "tui").rglob("*.py")
                   if naming.search(path.read_text()))
    assert found == ["tui/decode.py"]
