"""``[wan] mode``: a plain IPv4 WAN (the default), or IPv4 carried over an IPv6 WAN by MAP-E or DS-Lite.

    [wan]
    mode = "map-e"                      # or "ds-lite"; "ipv4" (the default) takes [wan] as before
    tap = "wan0"
    address6 = "2001:db8:ffff::2/64"    # the router's address on the IPv6 access link
    gateway6 = "2001:db8:ffff::1"       # its default route (RFC 4861: resolved by Neighbor Discovery)
    mtu = 1500                          # the IPv6 link's MTU; IPv4 inside gets 40 bytes less (RFC 2473 §6.7)
    delegated_prefix = "2001:db8:b:100::/56"   # native IPv6: the LAN gets its subnet 1 by SLAAC (RFC 4861);
                                        # under MAP-E the End-user prefix by default
    ipv6_<vpn> = false                  # let unsolicited inbound of that VPN in to LAN hosts (RFC 6092 §3.2.4),
                                        # for each helper that declares what it needs (Helper.ipv6_inbound)

    [wan.map_e]                         # RFC 7597 §5: one Basic Mapping Rule, hub-and-spoke to the BR
    end_user_prefix = "2001:db8:a:2300::/56"
    rule_ipv6_prefix = "2001:db8:a::/48"
    rule_ipv4_prefix = "198.51.100.192/28"
    ea_bits = 8
    psid_offset = 6
    br = "2001:db8:ffff::1"

    [wan.ds_lite]                       # RFC 6333 §5: the router is a B4
    aftr = "2001:db8:ffff::1"

Under MAP-E the IPv4 address, the PSID and the port set are derived from the rule (``router.mape``), so
``[wan] address`` and ``[nat.port_set]`` are refused there.  Under DS-Lite the router's own IPv4 address is
192.0.0.2, RFC 6333 §5.7's for the B4.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from ipaddress import IPv6Address, IPv6Interface

from .config import ConfigError, PortConfig, check_tap, default_mac, port_mac
from .helpers import registry
from .mape import IPV6_MINIMUM_MTU, MapCE, MapRule, derive_ce, encapsulated_mtu
from .packet.frame import ip_int

MODES = ("ipv4", "map-e", "ds-lite")
B4_ADDRESS = "192.0.0.2"
"""RFC 6333 §5.7: the B4's IPv4 address, from 192.0.0.0/29, for what the B4 itself sends (its ICMP)."""
B4_PREFIX_LEN = 29
LINK_KEYS = {"mode", "tap", "address6", "gateway6", "mac", "mtu", "map_e", "ds_lite", "delegated_prefix"}
LAN_SUBNET = 1
"""The LAN's /64 within the delegated prefix: subnet 1, since MAP-E's CE address takes subnet 0 (RFC 7597 §6)."""
MAP_E_KEYS = {"end_user_prefix", "rule_ipv6_prefix", "rule_ipv4_prefix", "ea_bits", "psid_offset", "br"}


@dataclass(frozen=True)
class WanLink:
    """An IPv6 WAN that carries the router's IPv4 in IPv6 (RFC 2473) to a tunnel peer: a BR or an AFTR."""
    mode: str
    address6: IPv6Interface
    gateway6: IPv6Address
    peer: IPv6Address
    """The far end of every softwire: the BR (MAP-E) or the AFTR (DS-Lite)."""
    source: IPv6Address
    """The near end: the CE's MAP IPv6 address (RFC 7597 §6), or the B4's link address (RFC 6333 §5.4)."""
    link_mtu: int
    rule: MapRule | None = None
    ce: MapCE | None = None
    delegated_prefix: ipaddress.IPv6Network | None = None
    """Native IPv6 for the LAN comes from it (None: the LAN gets no IPv6)."""
    ipv6_switches: tuple[tuple[str, bool], ...] = ()
    """("ipv6_<vpn>", on) for each helper with ``ipv6_inbound``: the IPv6 firewall's switches at start."""

    @property
    def lan_prefix6(self) -> ipaddress.IPv6Network | None:
        """The LAN's /64: subnet ``LAN_SUBNET`` of the delegated prefix."""
        if self.delegated_prefix is None:
            return None
        return ipaddress.IPv6Network((int(self.delegated_prefix.network_address) | LAN_SUBNET << 64, 64))

    @property
    def inner_mtu(self) -> int:
        """The largest IPv4 packet a softwire carries whole (RFC 2473 §6.7, RFC 7597 §8.3.1)."""
        return encapsulated_mtu(self.link_mtu)

    def status(self) -> dict:
        """``status()["wan"]`` (``router.control.schema.STATUS_WAN``)."""
        map_e = ds_lite = None
        if self.ce is not None:
            map_e = {"ipv4": str(self.ce.ipv4_address), "psid": self.ce.psid, "psid_length": self.ce.psid_length,
                     "ports": self.ce.port_set.size(), "ce_ipv6": str(self.source), "br": str(self.peer),
                     "end_user_prefix": str(self.ce.end_user_prefix), "mtu": self.inner_mtu}
        else:
            ds_lite = {"aftr": str(self.peer), "b4_ipv4": B4_ADDRESS, "mtu": self.inner_mtu}
        effective = self.mode != "ds-lite"
        return {"mode": self.mode, "ipv6": str(self.address6), "gateway6": str(self.gateway6), "map_e": map_e,
                "ds_lite": ds_lite, "passthrough_effective": effective,
                "note": None if effective else DS_LITE_NOTE,
                "lan_prefix6": None if self.lan_prefix6 is None else str(self.lan_prefix6)}


DS_LITE_NOTE = "DS-Lite: the AFTR does the NAT; the passthrough switches have no effect"
IPV4_STATUS = {"mode": "ipv4", "ipv6": None, "gateway6": None, "map_e": None, "ds_lite": None,
               "passthrough_effective": True, "note": None, "lan_prefix6": None, "ipv6_switches": {}}


def wan_mode(table: dict) -> str:
    mode = table.get("mode", "ipv4")
    if mode not in MODES:
        raise ConfigError(f"wan.mode: one of {', '.join(map(repr, MODES))}, not {mode!r}")
    if mode == "ipv4":
        for key in ("map_e", "ds_lite", "address6", "gateway6"):
            if key in table:
                raise ConfigError(f"wan.{key}: only with an IPv6 WAN (wan.mode = \"map-e\" or \"ds-lite\")")
    return mode


def parse_link(table: dict, mode: str) -> tuple[PortConfig, WanLink]:
    """``[wan]`` of an IPv6 WAN: the link and the IPv4 port the rest of the router sees (its address, its MTU
    less the softwire's 40 bytes)."""
    switches = ipv6_switch_names()
    unknown = set(table) - LINK_KEYS - set(switches)
    if "address" in unknown or "gateway" in unknown:
        key = "address" if "address" in unknown else "gateway"
        raise ConfigError(f"wan.{key}: not with wan.mode = {mode!r}: the IPv4 side comes from "
                          f"{'[wan.map_e]' if mode == 'map-e' else 'the B4 (192.0.0.2)'}; the link is address6")
    if unknown:
        raise ConfigError(f"wan.{sorted(unknown)[0]}: unknown key")
    other = "ds_lite" if mode == "map-e" else "map_e"
    if other in table:
        raise ConfigError(f"wan.{other}: not with wan.mode = {mode!r}")
    tap = check_tap(_text(table, "tap", required=True), "wan")
    address6 = _interface6(table, "address6")
    gateway6 = _address6(table, "gateway6", "wan")
    if gateway6 not in address6.network or gateway6 == address6.ip:
        raise ConfigError(f"wan.gateway6: {gateway6} is not another address in {address6.network}")
    mtu = table.get("mtu", 1500)
    if type(mtu) is not int or not IPV6_MINIMUM_MTU <= mtu <= 9000:
        raise ConfigError(f"wan.mtu: the IPv6 link's MTU, from {IPV6_MINIMUM_MTU} (RFC 8200 §5) to 9000")
    if mode == "map-e":
        link, ipv4, prefix_len = _map_e(_section(table, "map_e"), address6, gateway6, mtu)
    else:
        link = _ds_lite(_section(table, "ds_lite"), address6, gateway6, mtu)
        ipv4, prefix_len = B4_ADDRESS, B4_PREFIX_LEN
    link = replace(link, delegated_prefix=_delegated(table, link, address6),
                   ipv6_switches=tuple((name, _flag(table, name)) for name in switches))
    address = ip_int(ipv4)
    mac = port_mac(_text(table, "mac") if "mac" in table else None, "wan", default_mac(1, address))
    port = PortConfig(tap=tap, address=address, prefix_len=prefix_len, mac=mac, mtu=link.inner_mtu)
    return port, link


def _map_e(table: dict, address6: IPv6Interface, gateway6: IPv6Address, mtu: int):
    unknown = set(table) - MAP_E_KEYS
    if unknown:
        raise ConfigError(f"wan.map_e.{sorted(unknown)[0]}: unknown key")
    for key in MAP_E_KEYS - {"psid_offset"}:
        if key not in table:
            raise ConfigError(f"wan.map_e.{key}: required with wan.mode = \"map-e\"")
    ea_bits, offset = table["ea_bits"], table.get("psid_offset", 6)
    if type(ea_bits) is not int or type(offset) is not int:
        raise ConfigError("wan.map_e.ea_bits and psid_offset: whole numbers")
    try:
        rule = MapRule.from_strings(_text(table, "rule_ipv6_prefix", where="wan.map_e"),
                                    _text(table, "rule_ipv4_prefix", where="wan.map_e"), ea_bits, offset)
        end_user = ipaddress.IPv6Network(_text(table, "end_user_prefix", where="wan.map_e"))
        ce = derive_ce(rule, end_user)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"wan.map_e: {exc}") from None
    br = _address6(table, "br", "wan.map_e")
    link = WanLink("map-e", address6, gateway6, br, ce.map_ipv6_address, mtu, rule, ce)
    return link, str(ce.ipv4_address), 32


def _ds_lite(table: dict, address6: IPv6Interface, gateway6: IPv6Address, mtu: int) -> WanLink:
    unknown = set(table) - {"aftr"}
    if unknown:
        raise ConfigError(f"wan.ds_lite.{sorted(unknown)[0]}: unknown key")
    if "aftr" not in table:
        raise ConfigError("wan.ds_lite.aftr: required with wan.mode = \"ds-lite\" (the AFTR's IPv6 address)")
    return WanLink("ds-lite", address6, gateway6, _address6(table, "aftr", "wan.ds_lite"), address6.ip, mtu)


def ipv6_switch_names() -> list[str]:
    """``ipv6_<vpn>`` for each registered helper that declares ``ipv6_inbound``."""
    return [f"ipv6_{name}" for name in registry.ipv6_switch_vpns()]


def _delegated(table: dict, link: WanLink, address6: IPv6Interface) -> ipaddress.IPv6Network | None:
    """``[wan] delegated_prefix``: the prefix the provider delegates (MAP-E: the End-user prefix by default)."""
    if "delegated_prefix" not in table:
        return link.ce.end_user_prefix if link.ce is not None and link.ce.end_user_prefix.prefixlen <= 63 else None
    text = _text(table, "delegated_prefix")
    try:
        prefix = ipaddress.IPv6Network(text)
    except ValueError:
        raise ConfigError(f"wan.delegated_prefix: not an IPv6 prefix such as 2001:db8:b:100::/56: {text!r}") from None
    if not 32 <= prefix.prefixlen <= 63:
        raise ConfigError("wan.delegated_prefix: from /32 to /63, so that the LAN's /64 is one of its subnets")
    if prefix.overlaps(address6.network):
        raise ConfigError(f"wan.delegated_prefix: {prefix} overlaps the WAN link's {address6.network}")
    if link.ce is not None and not prefix.subnet_of(link.ce.end_user_prefix):
        raise ConfigError(f"wan.delegated_prefix: {prefix} is not inside the MAP-E End-user prefix "
                          f"{link.ce.end_user_prefix}")
    return prefix


def _flag(table: dict, key: str) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"wan.{key}: true or false")
    return value


def _section(table: dict, key: str) -> dict:
    value = table.get(key)
    if not isinstance(value, dict):
        raise ConfigError(f"[wan.{key}]: required with wan.mode = \"{key.replace('_', '-')}\"")
    return value


def _text(table: dict, key: str, required: bool = False, where: str = "wan") -> str:
    value = table.get(key)
    if not isinstance(value, str):
        raise ConfigError(f"{where}.{key}: {'required, ' if required or value is None else ''}a string")
    return value


def _interface6(table: dict, key: str) -> IPv6Interface:
    text = _text(table, key, required=True)
    try:
        iface = IPv6Interface(text)
    except ValueError:
        raise ConfigError(f"wan.{key}: not an IPv6 address with prefix length: {text!r}") from None
    if "/" not in text or not 8 <= iface.network.prefixlen <= 127:
        raise ConfigError(f"wan.{key}: give a prefix length, as in 2001:db8:ffff::2/64")
    if iface.ip.is_multicast or iface.ip.is_unspecified or iface.ip.is_loopback or iface.ip.is_link_local:
        raise ConfigError(f"wan.{key}: {iface.ip} is not a unicast address of a prefix")
    return iface


def _address6(table: dict, key: str, where: str) -> IPv6Address:
    text = _text(table, key, required=True, where=where)
    try:
        address = IPv6Address(text)
    except ValueError:
        raise ConfigError(f"{where}.{key}: not an IPv6 address: {text!r}") from None
    if address.is_multicast or address.is_unspecified or address.is_loopback:
        raise ConfigError(f"{where}.{key}: {address} is not a unicast address")
    return address
