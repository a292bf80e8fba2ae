"""ARP for IPv4 over Ethernet (RFC 826)."""

from __future__ import annotations

import struct
from enum import IntEnum

from .frame import BROADCAST_MAC, ETH_OFFSET, EtherType, ethernet

ARP = struct.Struct("!HHBBH6sI6sI")
"""hardware type, protocol type, hlen, plen, operation, sender MAC, sender IP, target MAC, target IP."""
ARP_OFFSET = ETH_OFFSET + 14


class ArpOp(IntEnum):
    REQUEST = 1
    REPLY = 2


def arp_frame(op: int, src_mac: bytes, src_ip: int, target_mac: bytes, target_ip: int,
              eth_dst: bytes | None = None) -> bytearray:
    """An Ethernet/IPv4 ARP packet (RFC 826), broadcast unless ``eth_dst`` is given."""
    body = ARP.pack(1, EtherType.IPV4, 6, 4, op, src_mac, src_ip, target_mac, target_ip)
    return ethernet(eth_dst or BROADCAST_MAC, src_mac, EtherType.ARP, body)


def gratuitous_arp(mac: bytes, ip: int) -> bytearray:
    """An ARP announcement (RFC 5227 §3): a request whose sender and target are both ``ip``."""
    return arp_frame(ArpOp.REQUEST, mac, ip, bytes(6), ip)
