"""How the router behaves, so it can be the router a VPN user really sits behind.

* NAT behaviour in RFC 4787's terms: mapping (§4.1), filtering (§5), port
  assignment (§4.2.1, RFC 6056), hairpinning (§6), and an IPoE port set
  (RFC 7597 §5.1) that every outside port must come from.
* Passthrough modes: ``"multi"`` (any number of LAN clients per protocol),
  ``"single"`` (one at a time, as a basic home router's "VPN passthrough"),
  ``"off"``.
* Access rules: which clients may open which VPN to which servers.
* Named profiles: presets of the above (see ``PROFILES`` and the README's
  table for what each models and the evidence).

Pure data and parsing; the data plane applies it (``nat.py``,
``dataplane/admission.py``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace

from .helpers import registry
from .portset import PortSet

MAPPINGS = ("endpoint-independent", "address-dependent", "address-and-port-dependent")
FILTERINGS = MAPPINGS
PORT_ASSIGNMENTS = ("preserve", "sequential", "random")
PASSTHROUGH_MODES = ("off", "single", "multi")
RULE_ACTIONS = ("allow", "deny")


@dataclass(frozen=True)
class NatBehaviour:
    mapping: str = "endpoint-independent"
    """RFC 4787 §4.1: which outbound flows of one inside endpoint share an outside port."""
    filtering: str = "address-dependent"
    """RFC 4787 §5: which inbound packets a mapping lets in."""
    port_assignment: str = "preserve"
    """"preserve": the inside port when it is free; "sequential": the next free one; "random" (RFC 6056 §3.3.1)."""
    hairpinning: bool = True
    """RFC 4787 §6 REQ-9: a LAN host may reach another through the WAN address."""
    port_set: PortSet | None = None
    """RFC 7597 §5.1: when set, every outside port comes from it, and GRE and raw ESP cannot pass."""
    profile: str = "default"
    """The profile these settings start from."""
    overrides: tuple[str, ...] = ()
    """The keys set explicitly that differ from the profile's."""

    def to_dict(self) -> dict:
        return {"profile": self.profile, "overrides": list(self.overrides), "mapping": self.mapping,
                "filtering": self.filtering,
                "port_assignment": self.port_assignment, "hairpinning": self.hairpinning,
                "port_set": self.port_set.to_dict() if self.port_set else None}


@dataclass(frozen=True)
class Profile:
    name: str
    models: str
    evidence: str
    nat: NatBehaviour
    passthrough: str
    """The mode of every VPN's passthrough: "off", "single" or "multi"."""


MAP_E_PORT_SET = PortSet(offset=4, psid_length=8, psid=1)

PROFILES: dict[str, Profile] = {p.name: p for p in (
    Profile("default", "vpnrouter's own behaviour: the RFCs' recommendations and multi passthrough",
            "RFC 4787 REQ-1, REQ-8, REQ-9; RFC 5382; RFC 5508",
            NatBehaviour(profile="default"), "multi"),
    Profile("basic-home", "a basic home router: its \"VPN passthrough\" lets one LAN client per protocol through",
            "port-restricted cone NAT, as most home gateways (RFC 5780 §1, measured in RFC 4787's survey); "
            "single passthrough as vendors document it",
            NatBehaviour(filtering="address-and-port-dependent", hairpinning=False, profile="basic-home"),
            "single"),
    Profile("strict", "a locked-down firewall: symmetric NAT, VPN passthrough off",
            "RFC 4787 §4.1 address-and-port-dependent mapping, §5 filtering; RFC 6056 random ports",
            NatBehaviour(mapping="address-and-port-dependent", filtering="address-and-port-dependent",
                         port_assignment="random", hairpinning=False, profile="strict"), "off"),
    Profile("linux", "Linux's nftables masquerade with conntrack",
            "measured in the lab with turnutils_natdiscovery through nftables masquerade "
            "(tests/integration/test_nat_behaviour.py)",
            NatBehaviour(filtering="address-and-port-dependent", hairpinning=False, profile="linux"),
            "multi"),
    Profile("map-e", "IPv4 over IPv6 (MAP-E) address sharing: 240 ports, no GRE, no raw ESP",
            "RFC 7597 §5.1 with offset 4, PSID length 8, as a widely used MAP-E service assigns",
            NatBehaviour(port_set=MAP_E_PORT_SET, profile="map-e"), "multi"),
)}


@dataclass(frozen=True)
class Rule:
    """``[[passthrough.rule]]``: the first rule that matches (vpn, client, server) decides."""
    vpn: str
    client: ipaddress.IPv4Network
    server: ipaddress.IPv4Network
    action: str

    def matches(self, vpn: str, client: int, server: int) -> bool:
        return (self.vpn in ("any", vpn) and client & _mask(self.client) == int(self.client.network_address)
                and server & _mask(self.server) == int(self.server.network_address))

    def to_dict(self) -> dict:
        return {"vpn": self.vpn, "client": str(self.client), "server": str(self.server), "action": self.action}


def rule_vpns() -> tuple[str, ...]:
    """What a rule's ``vpn`` may be: a registered protocol, or "any"."""
    return (*registry.names(), "any")


def _mask(net: ipaddress.IPv4Network) -> int:
    return int(net.netmask)


def parse_rule(entry: dict, where: str) -> Rule:
    """A rule from its TOML or control-socket form; ``ValueError`` naming the key on bad input."""
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: must be a table with vpn, client, server and action")
    unknown = set(entry) - {"vpn", "client", "server", "action"}
    if unknown:
        raise ValueError(f"{where}.{sorted(unknown, key=str)[0]}: unknown key (known: action, client, server, vpn)")
    vpn = entry.get("vpn", "any")
    if vpn not in rule_vpns():
        raise ValueError(f"{where}.vpn: must be one of {', '.join(rule_vpns())}")
    action = entry.get("action")
    if action not in RULE_ACTIONS:
        raise ValueError(f"{where}.action: must be \"allow\" or \"deny\"")
    return Rule(vpn, _prefix(entry.get("client", "0.0.0.0/0"), f"{where}.client"),
                _prefix(entry.get("server", "0.0.0.0/0"), f"{where}.server"), action)


def _prefix(text, where: str) -> ipaddress.IPv4Network:
    if not isinstance(text, str):
        raise ValueError(f"{where}: an IPv4 address or prefix such as \"192.168.77.0/24\", not {text!r}")
    try:
        return ipaddress.IPv4Network(text)
    except ValueError:
        raise ValueError(f"{where}: {text!r} is not an IPv4 address or prefix (host bits must be zero, as in "
                         f"\"192.168.77.0/24\")") from None


def passthrough_mode(value, where: str) -> str:
    """true and "multi" are multi, false and "off" are off, "single" is single."""
    if value is True:
        return "multi"
    if value is False:
        return "off"
    if value in PASSTHROUGH_MODES:
        return value
    raise ValueError(f"{where}: must be true, false, \"off\", \"single\" or \"multi\", not {value!r}")


def nat_behaviour(table: dict, where: str = "nat") -> NatBehaviour:
    """``[nat]``: a profile's NAT settings (``profile``, default "default"), then the explicit keys over them."""
    known = {"profile", "mapping", "filtering", "port_assignment", "hairpinning", "port_set"}
    unknown = set(table) - known
    if unknown:
        raise ValueError(f"{where}.{sorted(unknown, key=str)[0]}: unknown key (known: {', '.join(sorted(known))})")
    name = table.get("profile", "default")
    if name not in PROFILES:
        raise ValueError(f"{where}.profile: unknown profile {name!r} (known: {', '.join(PROFILES)})")
    behaviour = PROFILES[name].nat
    changes = {}
    for key, choices in (("mapping", MAPPINGS), ("filtering", FILTERINGS), ("port_assignment", PORT_ASSIGNMENTS)):
        if key in table:
            if table[key] not in choices:
                raise ValueError(f"{where}.{key}: must be one of {', '.join(choices)}")
            changes[key] = table[key]
    if "hairpinning" in table:
        if not isinstance(table["hairpinning"], bool):
            raise ValueError(f"{where}.hairpinning: must be true or false")
        changes["hairpinning"] = table["hairpinning"]
    if "port_set" in table:
        changes["port_set"] = _port_set(table["port_set"], f"{where}.port_set")
    overrides = tuple(k for k, v in changes.items() if getattr(behaviour, k) != v)
    return replace(behaviour, **changes, profile=name, overrides=overrides)


def _port_set(table, where: str) -> PortSet:
    if not isinstance(table, dict):
        raise ValueError(f"{where}: must be a table [{where}] with offset, psid_length and psid")
    unknown = set(table) - {"offset", "psid_length", "psid"}
    if unknown:
        raise ValueError(f"{where}.{sorted(unknown, key=str)[0]}: unknown key (known: offset, psid, psid_length)")
    values = {}
    for key in ("offset", "psid_length", "psid"):
        value = table.get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{where}.{key}: missing or not an integer")
        values[key] = value
    try:
        return PortSet(**values)
    except ValueError as exc:
        raise ValueError(f"{where}.{exc}") from None
