"""The frame as the data plane sees it: a virtio-net header, then Ethernet, then IPv4.

A TAP opened with IFF_VNET_HDR prefixes every frame with a ``virtio_net_hdr``
(virtio spec 1.1 §5.1.6; 12 bytes once TUNSETVNETHDRSZ sets the v1 size).
The data plane keeps that prefix on every frame it receives and sends, so a
frame is forwarded with one in-place rewrite and the kernel keeps doing the
checksum and segmentation work it offloaded to us.
"""

from __future__ import annotations

import struct
from enum import IntEnum

VNET_HDR_LEN = 12
ETH_LEN = 14
ETH_OFFSET = VNET_HDR_LEN
IP_OFFSET = VNET_HDR_LEN + ETH_LEN
"""Where the IPv4 header starts in a frame."""

VNET_HDR = struct.Struct("=BBHHHHH")
"""flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers (native order)."""

VNET_F_NEEDS_CSUM = 1
VNET_F_DATA_VALID = 2
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP_L4 = 5
GSO_ECN = 0x80

NO_OFFLOAD = bytes(VNET_HDR_LEN)
"""A virtio-net header that asks nothing of the kernel."""

BROADCAST_MAC = b"\xff" * 6


class EtherType(IntEnum):
    IPV4 = 0x0800
    ARP = 0x0806
    VLAN = 0x8100
    IPV6 = 0x86DD


class IpProto(IntEnum):
    ICMP = 1
    TCP = 6
    UDP = 17
    GRE = 47
    ESP = 50


IPV4 = struct.Struct("!BBHHHBBHII")
"""version/IHL, TOS, total length, id, flags/fragment offset, TTL, protocol, checksum, src, dst."""
PORTS = struct.Struct("!HH")
U16 = struct.Struct("!H")

IP_DF = 0x4000
IP_MF = 0x2000
IP_OFFSET_MASK = 0x1FFF

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_ACK = 0x10

L4_CHECKSUM_AT = {IpProto.TCP: 16, IpProto.UDP: 6, IpProto.ICMP: 2}
"""Offset of the checksum field inside each transport header."""


def parse_mac(text: str) -> bytes:
    parts = text.split(":")
    if len(parts) != 6:
        raise ValueError(f"not a MAC address: {text!r}")
    return bytes(int(p, 16) for p in parts)


def is_unicast(addr: int) -> bool:
    """Neither 0/8, loopback, multicast, reserved (240/4) nor the limited broadcast (RFC 1812 §5.3.7)."""
    first = addr >> 24
    return 0 < first < 224 and first != 127 and addr != 0xFFFFFFFF


def ip_str(addr: int) -> str:
    return f"{addr >> 24}.{(addr >> 16) & 255}.{(addr >> 8) & 255}.{addr & 255}"


def ip_int(text: str) -> int:
    parts = text.split(".")
    if len(parts) != 4 or not all(p.isdigit() and int(p) < 256 for p in parts):
        raise ValueError(f"not an IPv4 address: {text!r}")
    a, b, c, d = (int(p) for p in parts)
    return (a << 24) | (b << 16) | (c << 8) | d


def ethernet(dst: bytes, src: bytes, ethertype: int, payload: bytes | bytearray,
             vnet: bytes = NO_OFFLOAD) -> bytearray:
    """Build a frame (virtio-net header included)."""
    frame = bytearray(vnet)
    frame += dst
    frame += src
    frame += U16.pack(ethertype)
    frame += payload
    return frame
