"""A fuzz input, decoded: frames through one router, and what must hold after each.

Theory of operation
-------------------
``run(target, data)`` reads ``data`` a byte at a time (``Reader``; an
exhausted input reads zeros).  For each step of the target's conversation
(``scripts``) one byte says what to do with it: send it as it is (most
values, and zero), send it mutated, skip it, send it and then a random frame,
or let time jump and run the timer.  The rest of the input then picks more
frames: steps of the conversation again (mutated), or random bytes, from
either port.  A mutation flips, sets, truncates, extends, inserts or deletes
bytes, sets 16- and 32-bit fields to extremes, or rewrites the virtio-net
header; then, mostly, the checksums are recomputed so that the frame gets
past the IPv4 header check into the parsers behind it.

After every frame the ``Checker`` asserts: every emitted frame has the
router's MAC as its source and a correct IPv4 header checksum, and every
checksum is right (the scapy oracle, ``frames.emitted``) unless the input
itself carried a wrong one; tables stay within their limits; WAN input
reaches the LAN only for inside hosts that have a session or flow, and
nothing at all for targets that send only WAN junk.  At the end time jumps
far ahead and every table must be empty again.  Anything else raising is a
crash.
"""

from __future__ import annotations

from scapy.layers.inet import UDP
from scapy.utils import checksum as scapy_checksum

from tests.unit.frames import LAN, WAN, emitted, make_router
from router.dataplane.fragments import MAX_HELD_PER_DATAGRAM
from router.dataplane.icmp import embedded_flow
from router.dataplane.arp import PROBES, parse_arp
from router.helpers.ipsec_sa import ike_header
from router.packet.frame import IP_OFFSET as IP, VNET_HDR

from . import scripts

FRAME_TARGETS = (*scripts.SCRIPTS, "frame", "junk", "wan_junk")
"""Targets that drive ``receive_frame``: one per protocol, any conversation (``frame``), random frames from both
ports (``junk``) and from the WAN alone to a fresh router (``wan_junk``)."""
EXTREMES = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x80000000, 0xFFFFFFFF)
JUMPS = (0.5, 2.0, 31.0, 301.0, 700.0, 7500.0)
"""Seconds time may jump between frames: across ARP retries, stop grace, UDP, GRE/ESP/L2TP and TCP timeouts."""
END = 1e6
"""Where time jumps at the end: past every timeout."""
MAX_TAIL = 24
"""Frames the rest of an input may add after the conversation."""
EVENT_QUEUE = 4096
"""``EventQueue``'s default length."""
class Reader:
    """The input, consumed from the front; zeros once it is exhausted."""

    def __init__(self, data: bytes):
        self.data, self.at = bytes(data), 0

    @property
    def left(self) -> int:
        return len(self.data) - self.at

    def byte(self) -> int:
        if self.at >= len(self.data):
            return 0
        self.at += 1
        return self.data[self.at - 1]

    def below(self, n: int) -> int:
        """A number in [0, n), from two bytes."""
        return (self.byte() << 8 | self.byte()) % n if n > 1 else 0

    def take(self, n: int) -> bytes:
        chunk = self.data[self.at:self.at + n]
        self.at += len(chunk)
        return chunk


# -- mutations -------------------------------------------------------------------------------------------

def mutate(frame: bytes, rd: Reader) -> bytearray:
    """One to four mutations of ``frame`` (virtio-net header included), then usually fixed checksums."""
    out = bytearray(frame)
    for _ in range(1 + rd.byte() % 4):
        op = rd.byte() % 9
        span = len(out) - 12
        at = 12 + rd.below(max(1, min(span, 64) if rd.byte() & 1 else span))  # headers, half the time
        if op == 0 and at < len(out):
            out[at] ^= 1 << rd.byte() % 8
        elif op == 1 and at < len(out):
            out[at] = rd.byte()
        elif op in (2, 3):
            size = 2 if op == 2 else 4
            value = EXTREMES[rd.byte() % len(EXTREMES)] & (0xFFFF if size == 2 else 0xFFFFFFFF)
            if at + size <= len(out):
                out[at:at + size] = value.to_bytes(size, "big")
        elif op == 4:
            del out[max(at, 13):]
        elif op == 5:
            out += rd.take(rd.byte() % 64) if rd.byte() & 1 else bytes(rd.byte() * 8)
        elif op == 6:
            out[at:at] = rd.take(1 + rd.byte() % 16)
        elif op == 7:
            del out[at:at + 1 + rd.byte() % 16]
        elif op == 8:
            out[:12] = VNET_HDR.pack(rd.byte() & 3, (0, 1, 5, 0x80, rd.byte())[rd.byte() % 5], rd.below(2048),
                                     rd.below(9000), rd.below(2048), rd.below(64), 0)
    if rd.byte() % 4:
        fix_checksums(out)
    return out


def fix_checksums(frame: bytearray) -> None:
    """Recompute the IPv4 header checksum and the transport one (or its pseudo-header sum, with NEEDS_CSUM)
    where the header says where they are; leave anything else as it is."""
    if len(frame) < IP + 20 or frame[24:26] != b"\x08\x00" or frame[IP] >> 4 != 4:
        return
    ihl = (frame[IP] & 15) * 4
    tot_len = frame[IP + 2] << 8 | frame[IP + 3]
    if ihl < 20 or len(frame) < IP + ihl:
        return
    frame[IP + 10:IP + 12] = b"\0\0"
    frame[IP + 10:IP + 12] = scapy_checksum(bytes(frame[IP:IP + ihl])).to_bytes(2, "big")
    proto, l4, end = frame[IP + 9], IP + ihl, IP + tot_len
    at = {6: 16, 17: 6, 1: 2}.get(proto)
    if at is None or end > len(frame) or l4 + at + 2 > end or frame[IP + 6] & 0x3F or frame[IP + 7]:
        return
    frame[l4 + at:l4 + at + 2] = b"\0\0"
    pseudo = frame[IP + 12:IP + 20] + bytes([0, proto]) + (end - l4).to_bytes(2, "big")
    if frame[0] & 1 and proto != 1:
        value = ~scapy_checksum(bytes(pseudo)) & 0xFFFF
    else:
        value = scapy_checksum(bytes((pseudo if proto != 1 else b"") + frame[l4:end]))
        value = 0xFFFF if value == 0 and proto == 17 else value
    frame[l4 + at:l4 + at + 2] = value.to_bytes(2, "big")


def random_frame(rd: Reader, router, port: int) -> bytearray:
    """Random bytes, or random bytes behind a virtio-net and Ethernet header to the router (IPv4 or ARP)."""
    body = rd.take(rd.byte())
    kind = rd.byte() % 3
    if kind == 0:
        return bytearray(body)
    ethertype = b"\x08\x00" if kind == 1 else b"\x08\x06"
    frame = bytearray(12) + router.macs[port] + b"\x02\x00\x00\x00\x00\x42" + ethertype + body
    fix_checksums(frame)
    return frame


# -- the pure parsers, called directly on each input -------------------------------------------------------

def probe(frame: bytes) -> None:
    """Every parser that is a function of the bytes alone: each returns None or what it promises."""
    arp = parse_arp(bytearray(frame))
    assert arp is None or (arp[0] in (1, 2) and len(arp[1]) == 6), arp
    for l4 in (IP + 20, IP + 24):
        flow = embedded_flow(bytearray(frame), l4)
        assert flow is None or (flow[0] in (1, 6, 17) and flow[-1] + 8 <= len(frame)), flow
        for at in (l4 + 8, l4 + 12):
            spis = ike_header(frame, at, len(frame) - at)
            assert spis is None or (len(spis[0]) == len(spis[1]) == 8 and any(spis[0])), spis


# -- the invariants ----------------------------------------------------------------------------------------

class Checker:
    """Feeds frames to one router and checks what it emits and keeps."""

    def __init__(self, router, wan_only: bool = False):
        self.r = router
        self.wan_only = wan_only
        self.inputs: dict[int, tuple[bytearray, bool]] = {}
        """id -> (input frame, whether its checksums were right): a forwarded frame is the same object."""
        self.frames = 0

    def feed(self, port: int, frame: bytearray, now: float) -> None:
        probe(frame)
        self.inputs[id(frame)] = (frame, _checksums_ok(frame))
        before = self._inside_hosts()
        self.r.receive_frame(port, frame, now)
        self.frames += 1
        self._collect(port, before)

    def timer(self, now: float) -> None:
        self.r.handle_timer(now)
        self._collect(None, set())

    def finish(self, now: float) -> None:
        """Past every timeout: nothing may be left in any table."""
        for k in range(1, PROBES + 2):      # an unresolved next hop is given up on after PROBES ticks
            self.timer(now + k * END)
        r = self.r
        tables = {"nat.out_sessions": r.nat.out_sessions, "nat.in_sessions": r.nat.in_sessions,
                  "nat.shared_in": r.nat.shared_in, "nat.per_host": r.nat.per_host,
                  "nat.mappings": {k: m for k, m in r.nat.mappings.items() if not m.static},
                  "fragments.known": r.fragments.known, "fragments.held": r.fragments.held,
                  "arp.pending": {**r.arp[LAN].pending, **r.arp[WAN].pending},
                  "helper flows": {f.id: f for f in _flows(r)},
                  "holders": {vpn: h for vpn, h in r.admission.holders.items() if h}}
        for helper in r.helpers:
            for name, table in helper.tables().items():
                tables[f"{helper.name}.{name}"] = table
        left = {name: len(table) for name, table in tables.items() if table}
        assert not left, f"left after every timeout: {left}"

    def _inside_hosts(self) -> set[int]:
        r = self.r
        return {s.inside_ip for s in r.nat.out_sessions.values()} | {f.inside_ip for f in _flows(r)}

    def _collect(self, port_in: int | None, before: set[int]) -> None:
        r = self.r
        for port in (LAN, WAN):
            for frame in r.take_outbox(port):
                _well_formed(r, port, frame, self.inputs.get(id(frame)))
                if port == LAN and port_in == WAN:
                    assert not self.wan_only, "WAN junk reached the LAN"
                    if frame[24:26] == b"\x08\x00":
                        dst = int.from_bytes(frame[IP + 16:IP + 20], "big")
                        assert dst in before | self._inside_hosts(), "WAN input reached a LAN host with no session"
        check_bounds(r)


def _checksums_ok(frame: bytearray) -> bool:
    try:
        pkt = emitted(bytearray(frame))
    except Exception:       # noqa: BLE001 - the oracle's verdict on arbitrary bytes: wrong, or not parseable
        return False
    # With NEEDS_CSUM the field holds the pseudo-header sum, never 0: the oracle's "UDP without checksum"
    # exemption does not make such an input right.
    return not (frame[0] & 1 and UDP in pkt and pkt[UDP].chksum == 0)


def _well_formed(r, port: int, frame: bytearray, source) -> None:
    assert len(frame) >= 26 and frame[18:24] == r.macs[port], "not from the router's MAC"
    if frame[24:26] == b"\x08\x00":
        ihl = (frame[IP] & 15) * 4
        assert frame[IP] >> 4 == 4 and ihl >= 20 and len(frame) >= IP + ihl, "IPv4 header"
        assert scapy_checksum(bytes(frame[IP:IP + ihl])) == 0, "IPv4 header checksum"
        if source is None or source[1]:    # made by the router, or forwarded from a right one
            emitted(frame)


def _flows(r) -> list:
    return [flow for helper in r.helpers for flow in helper.flows()]


def check_bounds(r) -> None:
    """Every table within its configured limit, whatever arrived."""
    limits = r.config.limits
    nat = r.nat
    assert len(nat.out_sessions) <= limits.sessions and len(nat.in_sessions) <= limits.sessions
    assert all(n <= limits.sessions_per_host for n in nat.per_host.values())
    assert len(_flows(r)) <= limits.sessions, "helper flows beyond limits.sessions"
    for port in (LAN, WAN):
        table, config = r.arp[port], r.ports[port]
        assert len(table.pending) <= limits.arp_pending
        assert all(len(p.frames) <= limits.arp_queue for p in table.pending.values())
        assert len(table.cache) <= 2 ** (32 - config.prefix_len)
    fragments = r.fragments
    assert len(fragments.held) <= limits.fragments and len(fragments.known) <= 16 * limits.fragments
    assert all(len(frames) <= MAX_HELD_PER_DATAGRAM for frames, _ in fragments.held.values())
    assert len(r.events) <= EVENT_QUEUE
    for helper in r.helpers:
        for flow in helper.flows():
            for name, (table, most) in flow.tables().items():
                assert len(table) <= most, f"{helper.name} flow {flow.id}: {name} holds {len(table)} > {most}"


# -- running one input ------------------------------------------------------------------------------------

def run(target: str, data: bytes, feeder=None, **config) -> Checker:
    """Decode ``data`` as a program for ``target`` and run it; AssertionError (or any other) on a failure.
    ``config``: sections for ``make_router``; ``feeder(wan_only)``: what takes the frames and timer calls
    instead of a ``Checker`` of one router (the fast path's differential test feeds two)."""
    rd = Reader(data)
    if target == "frame":
        names = tuple(scripts.SCRIPTS)
        target = names[rd.byte() % len(names)]
    if feeder is None:
        checker = Checker(make_router(**config), wan_only=target == "wan_junk")
    else:
        checker = feeder(target == "wan_junk")
    steps = scripts.script(target) if target in scripts.SCRIPTS else ()
    pool = scripts.all_frames() if target in ("junk", "wan_junk") else steps
    if target == "wan_junk":
        pool = tuple(step for step in pool if step[0] == WAN)
    now = 1.0
    for port, frame in steps:
        now = _step(checker, rd, port, frame, now, rd.byte())
    for _ in range(MAX_TAIL):
        if not rd.left:
            break
        port, frame = pool[rd.below(len(pool))]
        now = _step(checker, rd, port, frame, now, rd.byte() | 0x80)
    checker.finish(now)
    return checker


def _step(checker: Checker, rd: Reader, port: int, frame: bytes, now: float, action: int) -> float:
    """One step of a program: ``action`` < 0x80 sends the frame as it is."""
    r = checker.r
    if checker.wan_only:
        port = WAN
    if action < 0x80:
        checker.feed(port, bytearray(frame), now)
    elif action < 0xD0:
        checker.feed(port if action & 7 or checker.wan_only else 1 - port, mutate(frame, rd), now)   # 1 in 8 swapped
    elif action < 0xD8:
        pass
    elif action < 0xF0:
        checker.feed(port, bytearray(frame), now)
        checker.feed(WAN if checker.wan_only else action & 1, random_frame(rd, r, action & 1), now)
    else:
        now += JUMPS[action % len(JUMPS)]
        checker.timer(now)
    return now + 0.01

