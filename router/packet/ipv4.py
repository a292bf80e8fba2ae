"""Building IPv4 datagrams and ICMP messages (RFC 791, RFC 792), for the cold path."""

from __future__ import annotations

import struct

from .checksum import internet_checksum
from .frame import IPV4, IP_OFFSET, IpProto, VNET_HDR, VNET_F_NEEDS_CSUM

ICMP_HEADER = struct.Struct("!BBHI")


class IcmpType:
    ECHO_REPLY = 0
    DEST_UNREACHABLE = 3
    ECHO_REQUEST = 8
    TIME_EXCEEDED = 11
    PARAMETER_PROBLEM = 12
    TIMESTAMP = 13
    TIMESTAMP_REPLY = 14
    INFO_REQUEST = 15
    INFO_REPLY = 16
    MASK_REQUEST = 17
    MASK_REPLY = 18


class Unreachable:
    """ICMP destination unreachable codes (RFC 792, RFC 1812 §5.2.7.1)."""
    NET = 0
    HOST = 1
    PROTOCOL = 2
    PORT = 3
    FRAG_NEEDED = 4
    ADMIN_PROHIBITED = 13


QUERY_REQUESTS = {IcmpType.ECHO_REQUEST: IcmpType.ECHO_REPLY, IcmpType.TIMESTAMP: IcmpType.TIMESTAMP_REPLY,
                  IcmpType.INFO_REQUEST: IcmpType.INFO_REPLY, IcmpType.MASK_REQUEST: IcmpType.MASK_REPLY}
QUERY_REPLIES = frozenset(QUERY_REQUESTS.values())
ERROR_TYPES = frozenset({IcmpType.DEST_UNREACHABLE, IcmpType.TIME_EXCEEDED, IcmpType.PARAMETER_PROBLEM, 4, 5})
"""Types whose body quotes an IP header (RFC 792; 4 is source quench, 5 redirect)."""

ERROR_QUOTE_MAX = 576 - 20 - 8
"""RFC 1812 §4.3.2.3: quote as much of the original as fits a 576-byte datagram."""


def ipv4_header(src: int, dst: int, proto: int, payload_len: int, ttl: int = 64,
                ident: int = 0, flags_frag: int = 0, tos: int = 0) -> bytearray:
    header = bytearray(IPV4.pack(0x45, tos, 20 + payload_len, ident, flags_frag, ttl, proto, 0, src, dst))
    header[10:12] = internet_checksum(header).to_bytes(2, "big")
    return header


def icmp_message(icmp_type: int, code: int, rest: int, body: bytes | bytearray) -> bytearray:
    """An ICMP message with its checksum (RFC 792)."""
    message = bytearray(ICMP_HEADER.pack(icmp_type, code, 0, rest))
    message += body
    message[2:4] = internet_checksum(message).to_bytes(2, "big")
    return message


def finish_partial_checksum(frame: bytearray) -> None:
    """Complete a NEEDS_CSUM transport checksum in software and clear the flag.

    virtio spec §5.1.6.2: the field already holds the pseudo-header sum.  It is found from the IPv4
    header, as the data plane's own rewrites find it, not at ``csum_start + csum_offset``: a sender's
    header may point those anywhere, even into the IPv4 header.
    """
    flags, gso_type, hdr_len, gso_size, start, offset, nbuf = VNET_HDR.unpack_from(frame, 0)
    if not flags & VNET_F_NEEDS_CSUM:
        return
    VNET_HDR.pack_into(frame, 0, flags & ~VNET_F_NEEDS_CSUM, gso_type, hdr_len, gso_size, 0, 0, nbuf)
    proto = frame[IP_OFFSET + 9]
    begin = IP_OFFSET + (frame[IP_OFFSET] & 15) * 4
    at = begin + (16 if proto == IpProto.TCP else 6 if proto == IpProto.UDP else len(frame))
    if at + 2 > len(frame):
        return
    value = internet_checksum(frame, begin)
    if value == 0 and proto == IpProto.UDP:
        value = 0xFFFF
    frame[at:at + 2] = value.to_bytes(2, "big")


def fragment(frame: bytearray, mtu: int) -> list[bytearray]:
    """Split the datagram in ``frame`` into fragments of at most ``mtu`` bytes (RFC 791 §3.2).

    Options are copied into every fragment, as a simplification of the
    copy-flag rule; the router never adds options of its own.
    """
    finish_partial_checksum(frame)
    vihl, tos, tot_len, ident, frag, ttl, proto, _, src, dst = IPV4.unpack_from(frame, IP_OFFSET)
    ihl = (vihl & 15) * 4
    head = frame[:IP_OFFSET]
    head[0:12] = bytes(12)
    options = frame[IP_OFFSET + 20:IP_OFFSET + ihl]
    payload = memoryview(frame)[IP_OFFSET + ihl:IP_OFFSET + tot_len]
    step = (mtu - ihl) & ~7
    base_offset = (frag & 0x1FFF) * 8
    last_mf = frag & 0x2000
    pieces = []
    for start in range(0, len(payload), step):
        chunk = payload[start:start + step]
        more = 0x2000 if start + step < len(payload) else last_mf
        header = bytearray(IPV4.pack(vihl, tos, ihl + len(chunk), ident, (frag & 0x4000) | more |
                                     ((base_offset + start) >> 3), ttl, proto, 0, src, dst)) + options
        header[10:12] = internet_checksum(header).to_bytes(2, "big")
        pieces.append(head + header + chunk)
    payload.release()
    return pieces
