"""Captured frames decoded for the details view: impacket's layers and the VPN header inside, built with scapy."""

from __future__ import annotations

import struct

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from tui.decode import decode

LAN = dict(src="192.168.77.11", dst="198.51.100.7")
IKE_HEADER = bytes.fromhex("1122334455667788" "99aabbccddeeff00") + bytes([33, 0x20, 34, 0x08]) + \
    struct.pack("!II", 0, 28)

FRAMES = [
    (Ether() / IP(**LAN) / TCP(sport=40001, dport=1723, flags="PA", seq=7) / Raw(b"x"),
     "192.168.77.11 > 198.51.100.7 TCP 40001 > 1723 [PA] seq 7"),
    (Ether() / IP(**LAN, proto=47) / Raw(bytes.fromhex("3081880b0004001100000005" "00000004") + b"ppp!"),
     "GRE v1 proto 0x880b call 17 len 4 seq 5 ack 4"),
    (Ether() / IP(**LAN, proto=50) / Raw(bytes.fromhex("c0ffee0100000009") + b"cipher"),
     "ESP spi c0ffee01 seq 9"),
    (Ether() / IP(**LAN) / UDP(sport=500, dport=500) / Raw(IKE_HEADER),
     "UDP 500 > 500 IKE spi_i 1122334455667788 spi_r 99aabbccddeeff00 exchange 34 initiator msgid 0"),
    (Ether() / IP(**LAN) / UDP(sport=4500, dport=4500) / Raw(b"\0\0\0\0" + IKE_HEADER),
     "NAT-T IKE spi_i 1122334455667788"),
    (Ether() / IP(**LAN) / UDP(sport=4500, dport=4500) / Raw(bytes.fromhex("0badf00d00000001") + b"c"),
     "NAT-T ESP spi 0badf00d seq 1"),
    (Ether() / IP(**LAN) / UDP(sport=4500, dport=4500) / Raw(b"\xff"), "NAT-T keepalive"),
    (Ether() / IP(**LAN) / UDP(sport=1701, dport=1701) / Raw(bytes.fromhex("c802001400050000")),
     "L2TP control tunnel 5 session 0"),
    (Ether() / IP(**LAN) / UDP(sport=1701, dport=1701) / Raw(bytes.fromhex("0002" "0009" "0004") + b"ppp"),
     "L2TP data tunnel 9 session 4"),
    (Ether() / IP(**LAN) / ICMP(type=8), "ICMP type 8 code 0"),
]


@pytest.mark.parametrize("frame,expected", FRAMES)
def test_a_frame_is_decoded_to_one_line(frame, expected):
    decoded = decode(bytes(frame))
    assert expected in decoded.summary
    assert decoded.summary.endswith(f"len {len(bytes(frame))}")
    assert "IP 192.168.77.11 -> 198.51.100.7" in decoded.layers        # impacket's rendering


@pytest.mark.parametrize("cut", [0, 5, 13, 20, 34, 40])
def test_a_cut_frame_never_raises(cut):
    frame = bytes(Ether() / IP(**LAN) / UDP(sport=500, dport=500) / Raw(IKE_HEADER))[:cut]
    assert decode(frame).summary
