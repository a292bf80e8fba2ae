"""MAP-E (RFC 7597) arithmetic and RFC 2473 IPv4-in-IPv6 packets: pure, no I/O, for ``[wan] mode = "map-e"``.

A MAP IPv6 address (RFC 7597 §5.2 Figure 3, §6 Figure 8)::

    |  n bits           |  o bits   |  s bits      |  128 - n - o - s bits (the interface identifier)  |
    | Rule IPv6 prefix  |  EA bits  | subnet ID: 0 |  16 bits: 0  |  32 bits: IPv4 address  | 16: PSID  |
    |<-- End-user IPv6 prefix  -->|

The EA bits are the CE's IPv4 address suffix (p = 32 - r bits, r the Rule IPv4 prefix length) followed by its
PSID (q = o - p bits).  The PSID picks the CE's ports by §5.1's algorithm, which ``router.portset`` implements.

What this module takes, and what it leaves out:

- A rule must give the CE a full or shared IPv4 address (o + r >= 32).  o + r < 32 delegates an IPv4 prefix
  (§5.2 Figure 4): refused, as are EA bits that end past bit 64 of the address (the /64 routing prefix).
- With o = 0 the PSID may be provisioned apart from the End-user prefix (e.g. by DHCPv6, RFC 7598):
  ``provisioned_psid_length`` on the rule, the PSID itself to ``derive_ce`` (Appendix A, Example 5).
- ``decapsulate`` takes only IPv4 directly after the 40-byte IPv6 header: it walks no extension headers.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network

from .portset import PortSet

IPV6_HEADER = struct.Struct("!IHBB16s16s")
"""Version / traffic class / flow label, payload length, next header, hop limit, source, destination."""
IPV6_HEADER_LENGTH = IPV6_HEADER.size
NEXT_HEADER_IPV4 = 4
"""The Assigned Number for an IPv4 payload (RFC 2473 §5, Next Header)."""
DEFAULT_HOP_LIMIT = 64
"""RFC 2473 §6.3: the routers' default tunnel hop limit."""
IPV6_MINIMUM_MTU = 1280
"""RFC 8200 §5: every link that carries IPv6 has an MTU of at least this."""
IPV4_MINIMUM_HEADER = 20
MAX_EA_BITS = 48
"""RFC 7597 §5.2's bound.  48 bits embed address and port, one port per CE: that k = 16 PortSet refuses."""


@dataclass(frozen=True)
class MapRule:
    """A Basic or Forwarding Mapping Rule (RFC 7597 §5, §5.2, §5.3), checked when it is built."""
    ipv6_prefix: IPv6Network
    """The Rule IPv6 prefix: n bits shared by every CE under the rule."""
    ipv4_prefix: IPv4Network
    """The Rule IPv4 prefix: the r leading bits of every CE's IPv4 address."""
    ea_bits_length: int
    """o: how many bits after the Rule IPv6 prefix embed the IPv4 suffix and the PSID (0 to 48)."""
    psid_offset: int = 6
    """a: the port bits ahead of the PSID; 6 by default, which keeps ports 0-1023 out (§5.1)."""
    provisioned_psid_length: int | None = None
    """k when the EA bits carry no PSID (o = p, as with o = 0): provisioned apart, e.g. DHCPv6 (Appendix A Ex. 5)."""

    def __post_init__(self) -> None:
        _check_rule_types(self)
        _check_ea_bits(self)
        _check_psid(self)

    @classmethod
    def from_strings(cls, ipv6_prefix: str, ipv4_prefix: str, ea_bits_length: int, psid_offset: int = 6,
                     provisioned_psid_length: int | None = None) -> MapRule:
        """A rule from prefixes in text, e.g. ``("2001:db8::/40", "192.0.2.0/24", 16)``; host bits are refused."""
        return cls(ip_network(ipv6_prefix), ip_network(ipv4_prefix), ea_bits_length, psid_offset,
                   provisioned_psid_length)

    @property
    def ipv4_suffix_length(self) -> int:
        """p = 32 - r: the IPv4 address bits the EA bits carry (§5.2)."""
        return 32 - self.ipv4_prefix.prefixlen

    @property
    def ea_psid_length(self) -> int:
        """q = o - p: the PSID bits the EA bits carry (§5.2 Figure 6)."""
        return self.ea_bits_length - self.ipv4_suffix_length

    @property
    def psid_length(self) -> int:
        """k: the PSID's length, from the EA bits or else provisioned; 0 means the address is not shared."""
        return self.ea_psid_length or self.provisioned_psid_length or 0

    @property
    def sharing_ratio(self) -> int:
        """2^k CEs share one IPv4 address (§5.1)."""
        return 1 << self.psid_length

    @property
    def end_user_prefix_length(self) -> int:
        """n + o: the shortest End-user IPv6 prefix the rule can read its EA bits from (§5.2)."""
        return self.ipv6_prefix.prefixlen + self.ea_bits_length


def _check_rule_types(rule: MapRule) -> None:
    if not isinstance(rule.ipv6_prefix, IPv6Network) or not isinstance(rule.ipv4_prefix, IPv4Network):
        raise TypeError("ipv6_prefix and ipv4_prefix: an IPv6Network and an IPv4Network (or MapRule.from_strings)")


def _check_ea_bits(rule: MapRule) -> None:
    """RFC 7597 §5.2: 0 <= o <= 48; o + r >= 32 here (a full or shared address); n + o within the /64."""
    o, p = rule.ea_bits_length, rule.ipv4_suffix_length
    if not 0 <= o <= MAX_EA_BITS:
        raise ValueError(f"EA-bits length {o}: from 0 to {MAX_EA_BITS} bits (RFC 7597 §5.2)")
    if rule.end_user_prefix_length > 64:
        raise ValueError(f"Rule IPv6 prefix /{rule.ipv6_prefix.prefixlen} plus {o} EA bits ends at bit "
                         f"{rule.end_user_prefix_length}: the EA bits must lie within the first 64 bits")
    if o < p:
        raise ValueError(f"{o} EA bits cannot hold the {p}-bit IPv4 suffix under Rule IPv4 prefix {rule.ipv4_prefix}: "
                         f"o + r < 32 delegates an IPv4 prefix (RFC 7597 §5.2 Figure 4), which is not supported; "
                         f"a full or shared address needs at least 32 - {32 - p} = {p} EA bits")


def _check_psid(rule: MapRule) -> None:
    """RFC 7597 §5.1: the PSID sits after a offset bits in a 16-bit port and leaves at least one port."""
    a, k, q, provisioned = rule.psid_offset, rule.psid_length, rule.ea_psid_length, rule.provisioned_psid_length
    if not 0 <= a <= 15:
        raise ValueError(f"psid_offset {a}: from 0 to 15 bits (RFC 7597 §5.1)")
    if provisioned is not None and (provisioned < 0 or q and provisioned != q):
        raise ValueError(f"provisioned PSID length {provisioned} disagrees with the {q} PSID bits the EA bits carry "
                         f"(q = o - p = {rule.ea_bits_length} - {rule.ipv4_suffix_length})")
    room = 16 - a - (1 if a == 0 else 0)
    if k > room:
        source = f"o - p = {rule.ea_bits_length} - {rule.ipv4_suffix_length}" if q else "provisioned"
        raise ValueError(f"PSID length {k} ({source}) does not fit a 16-bit port after a {a}-bit offset: "
                         f"at most {room} bits (RFC 7597 §5.1)")


@dataclass(frozen=True)
class MapCE:
    """What a CE derives from its BMR and End-user IPv6 prefix (RFC 7597 §5.2, §6)."""
    end_user_prefix: IPv6Network
    ea_bits: int
    """The o bits after the Rule IPv6 prefix: IPv4 suffix, then PSID."""
    ipv4_address: IPv4Address
    """The full or shared IPv4 address: Rule IPv4 prefix, then the suffix from the EA bits."""
    psid: int
    psid_length: int
    port_set: PortSet
    """The ports this CE may use; all of 1-65535 when the address is not shared (k = 0)."""
    map_ipv6_address: IPv6Address
    """The CE's MAP IPv6 address: the tunnel's source toward the BR (§5.4, §6)."""


def derive_ce(rule: MapRule, end_user_prefix: IPv6Network, psid: int | None = None) -> MapCE:
    """Apply a BMR to a delegated End-user IPv6 prefix (RFC 7597 §5.2; Appendix A, Example 1).

    ``psid`` is only for rules whose EA bits carry no PSID but which share the address (Example 5); when the
    EA bits do carry one, a ``psid`` given must agree with it.
    """
    _check_end_user_prefix(rule, end_user_prefix)
    ea_bits = _ea_bits(rule, end_user_prefix)
    ipv4 = IPv4Address(int(rule.ipv4_prefix.network_address) | ea_bits >> rule.ea_psid_length)
    ce_psid = _ce_psid(rule, ea_bits, psid)
    return MapCE(end_user_prefix, ea_bits, ipv4, ce_psid, rule.psid_length, port_set_for(rule, ce_psid),
                 map_ipv6_address(end_user_prefix, ipv4, ce_psid))


def _check_end_user_prefix(rule: MapRule, end_user_prefix: IPv6Network) -> None:
    if not isinstance(end_user_prefix, IPv6Network):
        raise TypeError(f"end_user_prefix: an IPv6Network, not {type(end_user_prefix).__name__}")
    if not end_user_prefix.subnet_of(rule.ipv6_prefix):
        raise ValueError(f"End-user IPv6 prefix {end_user_prefix} is not inside the Rule IPv6 prefix "
                         f"{rule.ipv6_prefix}")
    if end_user_prefix.prefixlen < rule.end_user_prefix_length:
        raise ValueError(f"End-user IPv6 prefix {end_user_prefix} is shorter than the /{rule.end_user_prefix_length} "
                         f"that Rule IPv6 prefix /{rule.ipv6_prefix.prefixlen} and {rule.ea_bits_length} EA bits "
                         f"need (RFC 7597 §5.2)")


def _ea_bits(rule: MapRule, end_user_prefix: IPv6Network) -> int:
    """The o bits at offset n of the address (RFC 7597 §5.2: the offset is the Rule IPv6 prefix length)."""
    after_ea = 128 - rule.end_user_prefix_length
    return int(end_user_prefix.network_address) >> after_ea & ((1 << rule.ea_bits_length) - 1)


def _ce_psid(rule: MapRule, ea_bits: int, provisioned: int | None) -> int:
    q, k = rule.ea_psid_length, rule.psid_length
    if q:
        from_ea = ea_bits & ((1 << q) - 1)
        if provisioned is not None and provisioned != from_ea:
            raise ValueError(f"PSID {provisioned:#x} disagrees with the PSID {from_ea:#x} in the EA bits")
        return from_ea
    if k and provisioned is None:
        raise ValueError(f"the rule shares the address ({k}-bit PSID) but its EA bits carry no PSID: "
                         "give the provisioned PSID (RFC 7597 Appendix A, Example 5)")
    if not 0 <= (provisioned or 0) < 1 << k:
        raise ValueError(f"PSID {provisioned}: from 0 to {(1 << k) - 1} for a {k}-bit PSID")
    return provisioned or 0


def port_set_for(rule: MapRule, psid: int) -> PortSet:
    """The CE's ports (RFC 7597 §5.1).  §5.1 is for shared addresses: with k = 0 every port 1-65535 is the CE's."""
    if rule.psid_length == 0:
        return PortSet(offset=0, psid_length=0, psid=0)
    return PortSet(offset=rule.psid_offset, psid_length=rule.psid_length, psid=psid)


def map_ipv6_address(end_user_prefix: IPv6Network, ipv4: IPv4Address, psid: int) -> IPv6Address:
    """The End-user prefix, a zero subnet ID, then the interface identifier (RFC 7597 §5.2, §6 Figure 8).

    The identifier is 16 zero bits, the 32-bit IPv4 address and the PSID right-aligned in 16 bits.  A prefix
    longer than 64 bits overwrites the identifier's leading bits (§6).
    """
    interface_id = int(ipv4) << 16 | psid
    host_bits = 128 - end_user_prefix.prefixlen
    return IPv6Address(int(end_user_prefix.network_address) | interface_id & ((1 << min(64, host_bits)) - 1))


def ce_address_for(rule: MapRule, ipv4: IPv4Address, port: int) -> IPv6Address:
    """The MAP IPv6 address of the CE that owns ``ipv4`` and ``port``, as a BR finds it from an FMR.

    RFC 7597 §5.3 Figure 7 (Appendix A, Example 2): the IPv4 suffix and the port's PSID make the EA bits; the
    End-user prefix is taken as n + o bits long, so any longer delegation's further bits count as zero.  A port
    in no CE's set (A = 0 under a nonzero offset, §5.1) is refused; with k = 0 the port does not matter.
    """
    if ipv4 not in rule.ipv4_prefix:
        raise ValueError(f"{ipv4} is not inside the Rule IPv4 prefix {rule.ipv4_prefix}")
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port {port}: from 0 to 65535")
    psid = _psid_of_port(rule, port)
    suffix = int(ipv4) & ((1 << rule.ipv4_suffix_length) - 1)
    ea_bits = suffix << rule.ea_psid_length | (psid if rule.ea_psid_length else 0)
    prefix_int = int(rule.ipv6_prefix.network_address) | ea_bits << (128 - rule.end_user_prefix_length)
    return map_ipv6_address(IPv6Network((prefix_int, rule.end_user_prefix_length)), ipv4, psid)


def _psid_of_port(rule: MapRule, port: int) -> int:
    """The k bits after the a offset bits (RFC 7597 §5.1 Figure 2); 0 when the address is not shared."""
    k = rule.psid_length
    if k == 0:
        return 0
    psid = port >> (16 - rule.psid_offset - k) & ((1 << k) - 1)
    if port not in PortSet(rule.psid_offset, k, psid):
        raise ValueError(f"port {port} is in no CE's port set: with a {rule.psid_offset}-bit offset, ports "
                         f"0-{(1 << (16 - rule.psid_offset)) - 1} are excluded (RFC 7597 §5.1)")
    return psid


class RefusalReason(StrEnum):
    """Why ``decapsulate`` refused a packet: short names, fit for counters."""
    NOT_IPV6 = "not_ipv6"
    TRUNCATED = "truncated"
    """Shorter than the 40-byte IPv6 header."""
    WRONG_NEXT_HEADER = "wrong_next_header"
    """Anything but IPv4 right after the IPv6 header, extension headers included."""
    NOT_FROM_BR = "not_from_br"
    PAYLOAD_LENGTH = "payload_length"
    """The IPv6 payload length claims more bytes than arrived."""
    INNER_NOT_IPV4 = "inner_not_ipv4"
    """Not IPv4 inside, or an IPv4 header that cannot be (IHL < 5, total length shorter than the header)."""
    INNER_TRUNCATED = "inner_truncated"
    """The inner packet is shorter than its IHL or total length says."""


class Refused(ValueError):
    """An IPv4-in-IPv6 packet ``decapsulate`` does not take; ``reason`` says why."""

    def __init__(self, reason: RefusalReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def encapsulate(ipv4_packet: bytes, src: IPv6Address, dst: IPv6Address, hop_limit: int = DEFAULT_HOP_LIMIT,
                traffic_class: int | None = None) -> bytes:
    """An IPv4 packet behind a 40-byte tunnel IPv6 header (RFC 2473 §5; RFC 7597 §8, §5.4).

    Next header 4, no extension headers, flow label 0 (§6.5).  RFC 2473 §5 lets the traffic class be the
    original packet's or a configured value, and §6.4 makes 0 the default; here, unless ``traffic_class`` is
    given, it is the IPv4 TOS octet (DSCP and ECN), so the IPv6 path sees the packet's class.
    """
    packet = bytes(ipv4_packet)
    if len(packet) < IPV4_MINIMUM_HEADER or packet[0] >> 4 != 4:
        raise ValueError("ipv4_packet: an IPv4 packet of at least 20 bytes")
    if len(packet) > 0xFFFF:
        raise ValueError(f"{len(packet)} bytes do not fit the 16-bit IPv6 payload length")
    if not 1 <= hop_limit <= 255 or not 0 <= (traffic_class or 0) <= 255:
        raise ValueError("hop_limit: from 1 to 255; traffic_class: from 0 to 255")
    klass = packet[1] if traffic_class is None else traffic_class
    first_word = 6 << 28 | klass << 20
    return IPV6_HEADER.pack(first_word, len(packet), NEXT_HEADER_IPV4, hop_limit, src.packed, dst.packed) + packet


def decapsulate(ipv6_packet: bytes, expected_src: IPv6Address | None = None) -> bytes:
    """The IPv4 packet inside an RFC 2473 tunnel packet, or ``Refused`` with the reason.

    Only next header 4 is taken: a packet whose IPv4 follows extension headers (hop-by-hop options, or RFC 2473
    §5.1's Tunnel Encapsulation Limit) is refused as ``wrong_next_header``, since MAP's own senders add none
    and a header chain is a parser's attack surface.  With ``expected_src`` (the BR, in hub-and-spoke mode)
    any other source is ``not_from_br``; the per-CE source checks of mesh mode (RFC 7597 §8.1) are not done.
    Bytes past the IPv6 payload length (link padding), or past the inner total length, are dropped.  The inner
    header checksum is left to the IPv4 input path.
    """
    data = bytes(ipv6_packet)
    _check_ipv6_header(data, expected_src)
    payload = data[IPV6_HEADER_LENGTH:IPV6_HEADER_LENGTH + int.from_bytes(data[4:6], "big")]
    return _inner_ipv4(payload)


def _check_ipv6_header(data: bytes, expected_src: IPv6Address | None) -> None:
    if data and data[0] >> 4 != 6:
        raise Refused(RefusalReason.NOT_IPV6, f"version {data[0] >> 4}")
    if len(data) < IPV6_HEADER_LENGTH:
        raise Refused(RefusalReason.TRUNCATED, f"{len(data)} bytes, less than the {IPV6_HEADER_LENGTH}-byte header")
    _, payload_length, next_header, _, src, _ = IPV6_HEADER.unpack_from(data)
    if next_header != NEXT_HEADER_IPV4:
        raise Refused(RefusalReason.WRONG_NEXT_HEADER, f"next header {next_header}, not {NEXT_HEADER_IPV4} (IPv4)")
    if expected_src is not None and src != expected_src.packed:
        raise Refused(RefusalReason.NOT_FROM_BR, f"from {IPv6Address(src)}, not {expected_src}")
    if payload_length > len(data) - IPV6_HEADER_LENGTH:
        raise Refused(RefusalReason.PAYLOAD_LENGTH,
                      f"payload length {payload_length}, {len(data) - IPV6_HEADER_LENGTH} bytes present")


def _inner_ipv4(payload: bytes) -> bytes:
    if not payload:
        raise Refused(RefusalReason.INNER_TRUNCATED, "no inner packet")
    if payload[0] >> 4 != 4 or payload[0] & 15 < 5:
        raise Refused(RefusalReason.INNER_NOT_IPV4, f"version {payload[0] >> 4}, IHL {payload[0] & 15}")
    header_length = (payload[0] & 15) * 4
    if len(payload) < header_length:
        raise Refused(RefusalReason.INNER_TRUNCATED, f"{len(payload)} bytes, IHL says {header_length}")
    total_length = int.from_bytes(payload[2:4], "big")
    if total_length < header_length:
        raise Refused(RefusalReason.INNER_NOT_IPV4, f"total length {total_length} under header length {header_length}")
    if len(payload) < total_length:
        raise Refused(RefusalReason.INNER_TRUNCATED, f"{len(payload)} bytes, total length says {total_length}")
    return payload[:total_length]


def encapsulated_mtu(link_mtu: int) -> int:
    """The largest IPv4 packet an IPv6 link of ``link_mtu`` carries whole inside a tunnel packet.

    RFC 2473 §6.7: the tunnel MTU is the path MTU less the tunnel headers, here the 40-byte IPv6 header (RFC 7597
    §8.3.1: encapsulation adds "typically ... 40 bytes").
    """
    if link_mtu < IPV6_MINIMUM_MTU:
        raise ValueError(f"link MTU {link_mtu}: IPv6 links carry at least {IPV6_MINIMUM_MTU} bytes (RFC 8200 §5)")
    return min(link_mtu - IPV6_HEADER_LENGTH, 0xFFFF)
