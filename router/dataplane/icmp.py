"""ICMP on the router: errors it sends and errors it translates.

Errors it sends: time exceeded (RFC 792, RFC 1812 §5.3.1), fragmentation
needed (RFC 1191), administratively prohibited when no mapping can be made
(RFC 5508, RFC 4787 §7), port unreachable for UDP sent to the
router itself.  RFC 1812 §4.3.2.7: never about an ICMP error, a non-first
fragment, or a datagram to or from a broadcast or multicast address; and at
a limited rate (§4.3.2.8).

Errors it translates (RFC 5508 §4.2, RFC 5382 REQ-9): an error about a NATed
flow has its outer address and its embedded IP and transport headers
translated back, in both directions.  Errors with a bad ICMP checksum are
dropped, and errors never refresh a session (RFC 5508).
"""

from __future__ import annotations

from ..packet import checksum
from ..packet.frame import IP_OFFSET, IPV4, L4_CHECKSUM_AT, IpProto, PORTS, U16, is_unicast
from ..packet.ipv4 import (ERROR_QUOTE_MAX, ERROR_TYPES, QUERY_REPLIES, QUERY_REQUESTS,
                           finish_partial_checksum, icmp_message, ipv4_header)

IP = IP_OFFSET


def error_datagram(router_ip: int, frame: bytearray, icmp_type: int, code: int, rest: int = 0) -> bytearray | None:
    """An ICMP error about the datagram in ``frame``, or None where RFC 1812 §4.3.2.7 forbids one."""
    vihl, _, tot_len, _, frag, _, proto, _, src, dst = IPV4.unpack_from(frame, IP)
    ihl = (vihl & 15) * 4
    if frag & 0x1FFF or not is_unicast(src) or not is_unicast(dst):
        return None
    if proto == IpProto.ICMP and len(frame) > IP + ihl and frame[IP + ihl] in ERROR_TYPES:
        return None
    finish_partial_checksum(frame)
    quote = frame[IP:IP + min(tot_len, ERROR_QUOTE_MAX)]
    message = icmp_message(icmp_type, code, rest, quote)
    return ipv4_header(router_ip, src, IpProto.ICMP, len(message)) + message


def echo_reply(frame: bytearray, ihl: int) -> bytearray | None:
    """Turn an echo request to the router into its reply, in place (RFC 792); None if malformed."""
    l4 = IP + ihl
    if checksum.ones_sum(frame, l4) != 0xFFFF:
        return None
    src = frame[IP + 12:IP + 16]
    frame[IP + 12:IP + 16] = frame[IP + 16:IP + 20]
    frame[IP + 16:IP + 20] = src
    frame[IP + 8] = 64
    frame[IP + 6:IP + 8] = b"\0\0"  # fresh datagram: no DF, no fragment offset
    frame[IP + 10:IP + 12] = b"\0\0"
    U16.pack_into(frame, IP + 10, checksum.internet_checksum(frame, IP, l4))
    frame[l4] = 0
    frame[l4 + 2:l4 + 4] = b"\0\0"
    U16.pack_into(frame, l4 + 2, checksum.internet_checksum(frame, l4))
    frame[0:12] = bytes(12)
    return frame


def embedded_flow(frame: bytearray, l4: int):
    """The flow an ICMP error is about: (proto, src, sport, dst, dport, inner_ip, inner_l4) or None.

    For an embedded ICMP query the identifier stands for the port, as the NAT keys it.
    """
    inner = l4 + 8
    if len(frame) < inner + 20:
        return None
    vihl, _, _, _, frag, _, proto, _, src, dst = IPV4.unpack_from(frame, inner)
    if vihl >> 4 != 4 or (vihl & 15) < 5 or frag & 0x1FFF:
        return None
    inner_l4 = inner + (vihl & 15) * 4
    if len(frame) < inner_l4 + 8:
        return None
    if proto in (IpProto.TCP, IpProto.UDP):
        sport, dport = PORTS.unpack_from(frame, inner_l4)
    elif proto == IpProto.ICMP and frame[inner_l4] in QUERY_REQUESTS:
        sport, dport = U16.unpack_from(frame, inner_l4 + 4)[0], 0
    elif proto == IpProto.ICMP and frame[inner_l4] in QUERY_REPLIES:
        sport, dport = 0, U16.unpack_from(frame, inner_l4 + 4)[0]
    else:
        return None
    return proto, src, sport, dst, dport, inner, inner_l4


def rewrite_embedded(frame: bytearray, inner: int, inner_l4: int, address_at: int, new_addr: int,
                     port_at: int, new_port: int) -> None:
    """Rewrite one address and one port of the embedded datagram and fix what covers them.

    ``address_at`` is 12 (embedded source) or 16 (embedded destination);
    ``port_at`` is an offset inside the embedded transport header.
    """
    proto = frame[inner + 9]
    old_addr = int.from_bytes(frame[inner + address_at:inner + address_at + 4], "big")
    old_port = U16.unpack_from(frame, inner_l4 + port_at)[0]
    frame[inner + address_at:inner + address_at + 4] = new_addr.to_bytes(4, "big")
    U16.pack_into(frame, inner_l4 + port_at, new_port)
    addr_delta = checksum.delta(old_addr, new_addr, 4)
    inner_csum = U16.unpack_from(frame, inner + 10)[0]
    U16.pack_into(frame, inner + 10, checksum.update(inner_csum, addr_delta))
    port_delta = checksum.delta(old_port, new_port, 2)
    at = inner_l4 + L4_CHECKSUM_AT[proto]
    if at + 2 <= len(frame):
        value = U16.unpack_from(frame, at)[0]
        if proto == IpProto.ICMP:
            U16.pack_into(frame, at, checksum.update(value, port_delta))
        elif value or proto == IpProto.TCP:
            U16.pack_into(frame, at, checksum.update(value, checksum.add(addr_delta, port_delta)) or 0xFFFF)


def rewrite_outer(frame: bytearray, address_at: int, new_addr: int, l4: int) -> None:
    """Set the outer source (12) or destination (16), decrement TTL, redo both checksums in full."""
    frame[IP + address_at:IP + address_at + 4] = new_addr.to_bytes(4, "big")
    frame[IP + 8] -= 1
    frame[IP + 10:IP + 12] = b"\0\0"
    U16.pack_into(frame, IP + 10, checksum.internet_checksum(frame, IP, l4))
    frame[l4 + 2:l4 + 4] = b"\0\0"
    U16.pack_into(frame, l4 + 2, checksum.internet_checksum(frame, l4))
    frame[0:12] = bytes(12)
