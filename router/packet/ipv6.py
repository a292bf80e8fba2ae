"""IPv6 as the WAN's link carries it: the fixed header, extension-header chains, ICMPv6 and Neighbor Discovery.

Pure functions over frames laid out as ``router.packet.frame`` says (virtio-net header, Ethernet, then here
IPv6 at ``IP_OFFSET``).  Addresses are 16-byte ``bytes``.  Nothing here keeps state: the neighbour cache is
``router.dataplane.softwire.Neighbour``.
"""

from __future__ import annotations

import ipaddress
import struct

from .checksum import fold, ones_sum
from .frame import IP_OFFSET, NO_OFFLOAD, EtherType, U16

IP = IP_OFFSET
HEADER = struct.Struct("!IHBB16s16s")
"""Version / traffic class / flow label, payload length, next header, hop limit, source, destination (RFC 8200 §3)."""
HEADER_LEN = HEADER.size
HOP_BY_HOP, ROUTING, FRAGMENT, DESTINATION_OPTIONS = 0, 43, 44, 60
IPIP, ICMPV6, NO_NEXT_HEADER = 4, 58, 59
SKIPPABLE = frozenset({HOP_BY_HOP, ROUTING, DESTINATION_OPTIONS})
"""Extension headers with the common length octet (RFC 8200 §4.3, §4.4, §4.6), walked past to the upper layer."""
MAX_EXTENSION_HEADERS = 8
"""A bound on the chain walked (RFC 8200 §4.1 orders at most six kinds; RFC 7112 lets a receiver refuse more)."""

ECHO_REQUEST, ECHO_REPLY = 128, 129
DESTINATION_UNREACHABLE, PACKET_TOO_BIG, TIME_EXCEEDED, PARAMETER_PROBLEM = 1, 2, 3, 4
ROUTER_SOLICITATION, ROUTER_ADVERTISEMENT = 133, 134
PREFIX_INFORMATION, MTU_OPTION = 3, 5
ALL_ROUTERS = bytes.fromhex("ff020000000000000000000000000002")
MINIMUM_MTU = 1280
"""RFC 8200 §5; an ICMPv6 error carries as much of the packet at fault as fits in it (RFC 4443 §2.4 (c))."""
NEIGHBOR_SOLICITATION, NEIGHBOR_ADVERTISEMENT = 135, 136
SOURCE_LINK_ADDRESS, TARGET_LINK_ADDRESS = 1, 2
"""ND option types (RFC 4861 §4.6.1)."""
NA_ROUTER, NA_SOLICITED, NA_OVERRIDE = 0x80, 0x40, 0x20
ND_HOP_LIMIT = 255
"""RFC 4861 §7.1: ND messages are sent with, and only taken with, hop limit 255 (so they came from the link)."""
UNSPECIFIED = bytes(16)
ALL_NODES = bytes.fromhex("ff020000000000000000000000000001")


class Malformed(ValueError):
    """An IPv6 packet this parser does not take; the message says why, in a few words."""


def parse(frame: bytearray) -> tuple[int, int, int, bytes, bytes, int]:
    """(payload end, upper-layer protocol, its offset, source, destination, hop limit) of the IPv6 packet in
    ``frame``, after walking its extension headers (RFC 8200 §4).  Link padding past the payload is cut off.

    ``Malformed`` for a wrong version, a payload length past the frame, and chains that lie: a header running
    past the payload, hop-by-hop options anywhere but first (§4.3), a routing header with segments left (§4.4:
    this router is no IPv6 router of its own on the WAN), more than ``MAX_EXTENSION_HEADERS``.
    """
    if len(frame) < IP + HEADER_LEN:
        raise Malformed(f"{len(frame) - IP} bytes, no IPv6 header")
    first, payload_length, next_header, hop_limit, src, dst = HEADER.unpack_from(frame, IP)
    if first >> 28 != 6:
        raise Malformed(f"version {first >> 28}")
    end = IP + HEADER_LEN + payload_length
    if end > len(frame):
        raise Malformed(f"payload length {payload_length}, {len(frame) - IP - HEADER_LEN} bytes present")
    if end < len(frame):
        del frame[end:]
    proto, offset = upper_layer(frame, next_header, IP + HEADER_LEN, end)
    return end, proto, offset, src, dst, hop_limit


def upper_layer(frame: bytearray, next_header: int, offset: int, end: int) -> tuple[int, int]:
    """Walk the extension headers from ``offset``: (the first header that is not one we skip, its offset).  A
    fragment header is returned as such (``FRAGMENT``): its payload is not an upper layer yet."""
    for count in range(MAX_EXTENSION_HEADERS + 1):
        if next_header not in SKIPPABLE:
            return next_header, offset
        if next_header == HOP_BY_HOP and count:
            raise Malformed("hop-by-hop options after another header (RFC 8200 §4.3)")
        if offset + 8 > end:
            raise Malformed(f"extension header {next_header} past the payload")
        length = (frame[offset + 1] + 1) * 8
        if offset + length > end:
            raise Malformed(f"extension header {next_header} of {length} bytes past the payload")
        if next_header == ROUTING and frame[offset + 3]:
            raise Malformed(f"routing header with {frame[offset + 3]} segments left")
        next_header, offset = frame[offset], offset + length
    raise Malformed(f"more than {MAX_EXTENSION_HEADERS} extension headers")


def pseudo_header_sum(src: bytes, dst: bytes, length: int, next_header: int) -> int:
    """The upper-layer checksum's pseudo-header sum (RFC 8200 §8.1)."""
    return fold(ones_sum(src) + ones_sum(dst) + (length >> 16) + (length & 0xFFFF) + next_header)


def icmpv6_valid(frame: bytearray, offset: int, end: int, src: bytes, dst: bytes) -> bool:
    """Whether the ICMPv6 message at ``offset`` has a right checksum (RFC 4443 §2.3)."""
    return fold(ones_sum(frame, offset, end) + pseudo_header_sum(src, dst, end - offset, ICMPV6)) == 0xFFFF


def solicited_node(address: bytes) -> bytes:
    """ff02::1:ffXX:XXXX, the solicited-node multicast address of ``address`` (RFC 4291 §2.7.1)."""
    return bytes.fromhex("ff0200000000000000000001ff") + address[13:]


def multicast_mac(address: bytes) -> bytes:
    """33:33 and the group's last four octets (RFC 2464 §7)."""
    return b"\x33\x33" + address[12:]


def packet(src_mac: bytes, dst_mac: bytes, src: bytes, dst: bytes, next_header: int, payload: bytes,
           hop_limit: int = 64) -> bytearray:
    """A whole frame: virtio-net header (asking nothing), Ethernet, IPv6 and ``payload``."""
    frame = bytearray(NO_OFFLOAD)
    frame += dst_mac + src_mac + U16.pack(EtherType.IPV6)
    frame += HEADER.pack(6 << 28, len(payload), next_header, hop_limit, src, dst)
    frame += payload
    return frame


def icmpv6(src_mac: bytes, dst_mac: bytes, src: bytes, dst: bytes, message: bytes, hop_limit: int = 64) -> bytearray:
    """An ICMPv6 message (type, code, zero checksum, body) in a frame, its checksum filled in (RFC 4443 §2.3)."""
    frame = packet(src_mac, dst_mac, src, dst, ICMPV6, message, hop_limit)
    at = IP + HEADER_LEN
    checksum = ~fold(ones_sum(frame, at) + pseudo_header_sum(src, dst, len(message), ICMPV6)) & 0xFFFF
    U16.pack_into(frame, at + 2, checksum)
    return frame


def neighbor_solicitation(mac: bytes, src: bytes, target: bytes, unicast_mac: bytes | None = None) -> bytearray:
    """An NS for ``target`` (RFC 4861 §4.3, §7.2.2): to its solicited-node group, or unicast to ``unicast_mac``
    and ``target`` itself when revalidating; with our link-layer address as its option."""
    message = bytes([NEIGHBOR_SOLICITATION, 0, 0, 0, 0, 0, 0, 0]) + target + bytes([SOURCE_LINK_ADDRESS, 1]) + mac
    if unicast_mac is None:
        group = solicited_node(target)
        return icmpv6(mac, multicast_mac(group), src, group, message, ND_HOP_LIMIT)
    return icmpv6(mac, unicast_mac, src, target, message, ND_HOP_LIMIT)


def neighbor_advertisement(mac: bytes, target: bytes, to_mac: bytes, to: bytes, router: bool = False) -> bytearray:
    """A solicited NA for our ``target`` address (RFC 4861 §4.4, §7.2.4): Solicited and Override set (and Router,
    on the LAN), our link-layer address as the target's.  To the soliciting node, or all-nodes when it had no
    address yet."""
    flags = NA_OVERRIDE | (NA_SOLICITED if to != UNSPECIFIED else 0) | (NA_ROUTER if router else 0)
    message = bytes([NEIGHBOR_ADVERTISEMENT, 0, 0, 0, flags, 0, 0, 0]) + target + bytes([TARGET_LINK_ADDRESS, 1]) + mac
    if to == UNSPECIFIED:
        return icmpv6(mac, multicast_mac(ALL_NODES), target, ALL_NODES, message, ND_HOP_LIMIT)
    return icmpv6(mac, to_mac, target, to, message, ND_HOP_LIMIT)


def link_address_option(frame: bytearray, offset: int, end: int, wanted: int) -> bytes | None:
    """The link-layer address in the ND option of type ``wanted`` from ``offset`` on, if any.  ``Malformed`` if
    an option has length 0 or runs past the message (RFC 4861 §4.6: such a packet is silently discarded)."""
    while offset + 2 <= end:
        kind, length = frame[offset], frame[offset + 1] * 8
        if not length or offset + length > end:
            raise Malformed("ND option of length 0 or past the message")
        if kind == wanted and length >= 8:
            return bytes(frame[offset + 2:offset + 8])
        offset += length
    return None


def address_text(address: bytes) -> str:
    return str(ipaddress.IPv6Address(address))


def link_local(mac: bytes) -> bytes:
    """fe80:: with the modified EUI-64 interface identifier of ``mac`` (RFC 4291 §2.5.1, Appendix A)."""
    return bytes.fromhex("fe80000000000000") + bytes([mac[0] ^ 2, mac[1], mac[2], 0xFF, 0xFE, mac[3], mac[4], mac[5]])


def router_advertisement(mac: bytes, src: bytes, prefix: bytes, mtu: int, to_mac: bytes = b"", to: bytes = ALL_NODES,
                         lifetime: int = 1800, valid: int = 86400, preferred: int = 14400) -> bytearray:
    """An RA (RFC 4861 §4.2) making us the default router, with a /64 for SLAAC (§4.6.2: on-link and autonomous,
    RFC 4862 §5.5.3), the link's MTU (§4.6.4) and our link-layer address (§4.6.1); M and O clear: no DHCPv6."""
    message = struct.pack("!BBHBBHII", ROUTER_ADVERTISEMENT, 0, 0, 64, 0, lifetime, 0, 0)
    message += bytes([SOURCE_LINK_ADDRESS, 1]) + mac
    message += struct.pack("!BBHI", MTU_OPTION, 1, 0, mtu)
    message += struct.pack("!BBBBIII", PREFIX_INFORMATION, 4, 64, 0xC0, valid, preferred, 0) + prefix
    return icmpv6(mac, to_mac or multicast_mac(to), src, to, message, ND_HOP_LIMIT)


def icmpv6_error(mac: bytes, to_mac: bytes, src: bytes, frame: bytearray, kind: int, code: int,
                 value: int) -> bytearray:
    """An ICMPv6 error about the packet in ``frame`` to its source (RFC 4443 §2.4, §3): as much of the packet as
    keeps the error within the minimum MTU."""
    offending = bytes(frame[IP_OFFSET:IP_OFFSET + MINIMUM_MTU - HEADER_LEN - 8])
    to = offending[8:24]
    message = struct.pack("!BBHI", kind, code, 0, value) + offending
    return icmpv6(mac, to_mac, src, to, message)
