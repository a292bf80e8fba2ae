"""Building frames for the data plane and checking what it emits, with scapy as the oracle.

Every frame the router emits goes through ``check_checksums``: scapy
recomputes each checksum from scratch and compares, so an incremental update
that is off by one bit fails the test that caused it.
"""

from __future__ import annotations

import os
import struct

from scapy.layers.inet import IP, TCP, in4_pseudoheader
from scapy.layers.l2 import ARP, Ether
from scapy.utils import checksum as scapy_checksum

from tests.oracle import check_checksums
from router.config import parse
from router.dataplane.router import LAN, WAN, Router
from router.fastpath import make_router as make
from router.helpers.registry import build_helpers
from router.packet.frame import NO_OFFLOAD, VNET_HDR

LAN_IP = "192.168.77.1"
WAN_IP = "198.51.100.1"
LAN_MAC = "02:76:72:00:4d:01"
WAN_MAC = "02:76:72:01:64:01"
C1, C2, C3 = "192.168.77.11", "192.168.77.12", "192.168.77.13"
S1, S2 = "198.51.100.10", "198.51.100.20"
FAR = "192.0.2.5"   # beyond the WAN gateway (TEST-NET-1)
GW = "198.51.100.254"
MACS = {C1: "02:00:00:00:00:11", C2: "02:00:00:00:00:12", C3: "02:00:00:00:00:13",
        S1: "02:00:00:00:01:10", S2: "02:00:00:00:01:20", GW: "02:00:00:00:01:fe"}


DATAPLANE = os.environ.get("VPNROUTER_TEST_DATAPLANE", "fast")
"""Which router the unit tests drive: "fast" (the fast path in front, the product's default) or "python"
(``make test`` runs the unit suite both ways)."""


def config(**sections) -> dict:
    data = {
        "lan": {"tap": "lan0", "address": f"{LAN_IP}/24"},
        "wan": {"tap": "wan0", "address": f"{WAN_IP}/24", "gateway": GW},
        "control": {"socket": "/tmp/unused.sock"},
        "dataplane": {"fastpath": DATAPLANE == "fast"},
    }
    for key, value in sections.items():
        if key in data and isinstance(value, dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


def make_router(seed: int = 1, helpers=None, **sections) -> Router:
    """A started router that knows the MACs of C1-C3, S1, S2 and the gateway; the registry's helpers by default."""
    import random
    cfg = parse(config(**sections))
    r = make(cfg, build_helpers(cfg) if helpers is None else helpers, rng=random.Random(seed))
    r.start(0.0)
    r.take_outbox(LAN)
    r.take_outbox(WAN)
    for ip in (C1, C2, C3):
        learn(r, LAN, ip)
    for ip in (S1, S2, GW):
        learn(r, WAN, ip)
    return r


def learn(r: Router, port: int, ip: str, now: float = 0.0) -> None:
    """The host at ``ip`` asks for the router's MAC, so the router learns it."""
    router_ip = LAN_IP if port == LAN else WAN_IP
    request = Ether(src=MACS[ip], dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=MACS[ip], psrc=ip, pdst=router_ip)
    r.receive_frame(port, wire(request), now)
    r.take_outbox(port)


def wire(pkt, vnet: bytes = NO_OFFLOAD) -> bytearray:
    return bytearray(vnet) + bytes(pkt)


def from_lan(src: str, dst: str, l4, ip_src: str | None = None, **ip) -> Ether:
    return Ether(src=MACS[src], dst=LAN_MAC) / IP(src=ip_src or src, dst=dst, **ip) / l4


def from_wan(src: str, l4, dst: str = WAN_IP, **ip) -> Ether:
    return Ether(src=MACS.get(src, MACS[GW]), dst=WAN_MAC) / IP(src=src, dst=dst, **ip) / l4


def step(r: Router, port: int, pkt, now: float = 1.0, vnet: bytes = NO_OFFLOAD) -> dict[int, list]:
    """Send one frame in; return {port: [emitted frames as scapy packets]}, checksums verified."""
    frame = wire(pkt, vnet) if not isinstance(pkt, (bytes, bytearray)) else bytearray(pkt)
    r.receive_frame(port, frame, now)
    return drain(r)


def drain(r: Router) -> dict[int, list]:
    """What the router sent, checksums verified; with the fast path, its counts handed back first, as the
    runtime does after each wake-up."""
    if hasattr(r, "sync"):
        r.sync()
    out = {}
    for port in (LAN, WAN):
        frames = r.take_outbox(port)
        out[port] = [emitted(f) for f in frames]
    return out


def emitted(frame: bytearray) -> Ether:
    flags, gso_type, _, _, csum_start, csum_offset, _ = VNET_HDR.unpack_from(frame, 0)
    pkt = Ether(bytes(frame[12:]))
    pkt.vnet_flags = flags
    check_checksums(pkt, partial=bool(flags & 1))
    return pkt


def vnet_partial(pkt, gso_type: int = 0, gso_size: int = 0) -> bytes:
    """A virtio-net header saying the transport checksum is partial (as the kernel sends TCP)."""
    ip_len = pkt[IP].ihl * 4
    csum_start = 14 + ip_len
    csum_offset = 16 if TCP in pkt else 6
    hdr_len = csum_start + (pkt[TCP].dataofs * 4 if TCP in pkt else 8)
    return VNET_HDR.pack(1, gso_type, hdr_len, gso_size, csum_start, csum_offset, 0)


def partial_frame(pkt, **kw) -> bytearray:
    """Serialise ``pkt`` as the kernel hands over a NEEDS_CSUM frame: the field holds the pseudo-header sum."""
    pkt = Ether(bytes(pkt))
    raw = bytearray(bytes(pkt))
    ip = pkt[IP]
    l4 = 14 + ip.ihl * 4
    at = l4 + (16 if TCP in pkt else 6)
    pseudo = in4_pseudoheader(ip.proto, ip, len(raw) - l4)
    raw[at:at + 2] = struct.pack("!H", ~scapy_checksum(pseudo) & 0xFFFF)
    return bytearray(vnet_partial(pkt, **kw)) + raw
