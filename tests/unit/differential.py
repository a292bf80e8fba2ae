"""Two routers, one run of frames: the Python data plane alone, and the fast path in front of it (issue 19).

``Twin`` drives both with the same wake-ups (frames, then the end-of-wake-up
sync the runtime does), the same timer calls and the same control requests,
and holds them to the same result: byte-identical output frames in the same
order, the same events, and at every check the same session views, status
counters, state records and timer.  ``TRAFFIC`` is a mix of every flow kind
the fast path takes (UDP, TCP with GSO super-frames and partial checksums,
PPTP's GRE, L2TP data with translated Tunnel IDs, NAT-T, raw ESP) set up by
real conversations, and frames it must leave to Python.
"""

from __future__ import annotations

from functools import cache

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw

from router.dataplane.events import event_to_dict
from tests.fuzz import scripts
from tests.fuzz.scripts import _gre, _udp, tcp_connection
from tests.unit import ipsec_frames as ike
from tests.unit import l2tp_frames as l2tp
from tests.unit import pptp_frames as pptp
from tests.unit.frames import (C1, C2, C3, LAN, LAN_IP, LAN_MAC, MACS, S1, S2, WAN, WAN_IP, WAN_MAC, from_lan,
                               from_wan, make_router, partial_frame, wire)

TIMEOUTS = {"udp": 20, "tcp_established": 60, "gre": 30, "natt": 30, "esp": 30, "l2tp": 30, "arp_cache": 25}
"""Short enough that a run's time jumps reach them, with traffic on the fast path only in between."""


class Mismatch(AssertionError):
    """The two routers did not do the same thing."""


class Twin:
    """The Python router and the fast-path router, side by side."""

    def __init__(self, seed: int = 1, **sections):
        sections.setdefault("timeouts", TIMEOUTS)
        self.python = make_router(seed, dataplane={"fastpath": False}, **sections)
        self.fast = make_router(seed, dataplane={"fastpath": True}, **sections)
        assert type(self.fast).__name__ == "FastPathRouter", "the fast path is not built"
        self.now = 1.0
        self.captured: tuple[list, list] = ([], [])
        self.sent = 0

    # -- driving ----------------------------------------------------------------------------------------

    def wake(self, frames, step: float = 0.01) -> None:
        """One wake-up: each frame into both, then what came out, compared."""
        for port, frame in frames:
            self.python.receive_frame(port, bytearray(frame), self.now)
            self.fast.receive_frame(port, bytearray(frame), self.now)
        self.fast.sync()            # as the runtime does at the end of a wake-up
        self._compare_output()
        self.now += step

    def timer(self, jump: float) -> None:
        """Time passes; the timer fires in both (with traffic only on the fast path before, expiry reads the
        last-seen times the cache counted)."""
        self.now += jump
        self.python.handle_timer(self.now)
        self.fast.handle_timer(self.now)
        self._compare_output()

    def do(self, method: str, *args):
        """A control request on both (``set_passthrough``, ``add_rule``, ``set_profile``, ``close_session``...)."""
        results = []
        for router in (self.python, self.fast):
            try:
                results.append(("ok", getattr(router, method)(*args, self.now)))
            except (KeyError, LookupError, ValueError) as exc:
                results.append(("error", str(exc)))
        self._same(f"{method}{args}", *results)
        self._compare_output()

    def capture(self, k: int) -> None:
        """Start capturing the ``k``-th session or flow (mod their number), as ``ctl capture`` would."""
        refs = self.python.session_refs()
        if not refs:
            return
        sid = refs[k % len(refs)].id
        for router, frames in zip((self.python, self.fast), self.captured):
            try:
                router.start_capture(sid, lambda frame, frames=frames: frames.append(bytes(frame)))
            except ValueError:      # captured already: the same in both
                pass

    def neighbours(self) -> None:
        """Every host answers for its address again (as they answer the router's ARP requests)."""
        for host, mac in MACS.items():
            port, router_ip, router_mac = (LAN, LAN_IP, LAN_MAC) if host in (C1, C2, C3) else (WAN, WAN_IP, WAN_MAC)
            self.wake([(port, bytes(wire(Ether(src=mac, dst=router_mac) / ARP(op=2, hwsrc=mac, psrc=host,
                                                                             hwdst=router_mac, pdst=router_ip))))])

    def arp(self, host: str, mac: str) -> None:
        """A LAN host answers for its address with another MAC (a new machine, a rebuilt lab)."""
        frame = wire(Ether(src=mac, dst=LAN_MAC) / ARP(op=2, hwsrc=mac, psrc=host, hwdst=LAN_MAC, pdst=LAN_IP))
        self.wake([(LAN, frame)])

    # -- comparing -----------------------------------------------------------------------------------------

    def _compare_output(self) -> None:
        for port in (LAN, WAN):
            want = [bytes(f) for f in self.python.take_outbox(port)]
            got = [bytes(f) for f in self.fast.take_outbox(port)]
            self._same(f"frames out of port {port}", want, got)
            self.sent += len(want)
        self._same("events", _events(self.python), _events(self.fast))
        self._same("captured frames", *self.captured)

    def check(self) -> None:
        """The views: sessions and flows, status (but which path runs), state records, the next timer."""
        python, fast = self.python, self.fast
        self._same("sessions", _views(python, self.now), _views(fast, self.now))
        self._same("status", _status(python, self.now), _status(fast, self.now))
        self._same("state records", python.state_records(), fast.state_records())
        self._same("timer", python.get_timer(), fast.get_timer())

    def _same(self, what: str, want, got) -> None:
        if want != got:
            raise Mismatch(f"at {self.now:.2f}, {what}:\n python {_short(want)}\n fast   {_short(got)}")


class TwinFeed:
    """What ``tests.fuzz.program.run`` feeds its frames and timer calls to (``feeder``): both routers."""

    def __init__(self, wan_only: bool, **sections):
        self.twin = Twin(**sections)
        self.r = self.twin.python          # what the program reads (a random frame's addresses)
        self.wan_only = wan_only

    def feed(self, port: int, frame: bytearray, now: float) -> None:
        self.twin.now = now
        self.twin.wake([(port, frame)], step=0.0)

    def timer(self, now: float) -> None:
        self.twin.timer(now - self.twin.now)

    def finish(self, now: float) -> None:
        self.twin.timer(now + 3600.0 - self.twin.now)
        self.twin.check()


def _events(router) -> list:
    return [event_to_dict(e) for e in iter(router.next_event, None)]


def _views(router, now: float) -> list:
    return sorted((info.to_dict() for info in router.session_infos(now)), key=lambda s: s["id"])


def _status(router, now: float) -> dict:
    status = router.status(now)
    del status["dataplane"]
    return status


def _short(value) -> str:
    text = repr(value)
    return text if len(text) < 3000 else text[:3000] + "..."


# -- the traffic ---------------------------------------------------------------------------------------------

def _tcp_segment(port: int, flags: str, data: bytes = b"", seq: int = 2000) -> tuple[int, bytes]:
    if port == LAN:
        return LAN, bytes(wire(from_lan(C2, S2, TCP(sport=41000, dport=8080, flags=flags, seq=seq, ack=9000)
                                        / Raw(data))))
    return WAN, bytes(wire(from_wan(S2, TCP(sport=8080, dport=41000, flags=flags, seq=9000, ack=seq) / Raw(data))))


def _esp(port: int, inside: str, remote: str, spi: int, size: int = 40) -> tuple[int, bytes]:
    body = Raw(spi.to_bytes(4, "big") + bytes(4) + bytes(size))
    pkt = from_lan(inside, remote, body, proto=50) if port == LAN else from_wan(remote, body, proto=50)
    return port, bytes(wire(pkt))


@cache
def setup() -> tuple[tuple[int, bytes], ...]:
    """Conversations that leave a flow of every kind established: a TCP connection (C2 to S2:8080), a PPTP
    call (C1 to S1, Call IDs 7 and 99), two L2TP tunnels to S1 (C1 and C2, both keeping 1701, the second's
    Tunnel ID translated), IKE and NAT-T (C1 to S2), raw ESP from C1 and C2 to S2, and UDP."""
    pptp = scripts._pptp_control()[:-3]                   # the control connection stays up
    frames = [*tcp_connection(C2, S2, 41000, 8080, [(True, b"hello")])[:4], *pptp]
    frames += [_udp(LAN, C1, S1, 1701, 1701, l2tp.sccrq(5)), _udp(LAN, C2, S1, 1701, 1701, l2tp.sccrq(5)),
               _udp(WAN, C1, S1, 1701, 1701, l2tp.sccrp(5, 77)), _udp(LAN, C1, S1, 1701, 1701, l2tp.scccn(77))]
    frames += list(scripts.script("ike"))[:7]
    frames += [_esp(LAN, C1, S2, 0x1001), _esp(WAN, C1, S2, 0x2001), _esp(LAN, C2, S2, 0x1002),
               _esp(WAN, C2, S2, 0x2002)]
    frames += [_udp(LAN, C1, S1, 5000, 53, b"query"), _udp(WAN, C1, S1, 5000, 53, b"answer"),
               _udp(LAN, C2, S1, 5000, 53, b"query")]      # C1 holds 5000: C2's goes out translated
    return tuple((port, bytes(frame)) for port, frame in frames)


@cache
def traffic() -> tuple[tuple[int, bytes], ...]:
    """Frames of the flows ``setup`` made, mostly the fast path's, some Python's."""
    frames = [
        _udp(LAN, C1, S1, 5000, 53, b"more"), _udp(WAN, C1, S1, 5000, 53, b"answers" * 20),
        (LAN, wire(from_lan(C1, S1, UDP(sport=5000, dport=53, chksum=0) / b"no checksum"))),
        (LAN, partial_frame(from_lan(C1, S1, UDP(sport=5000, dport=53) / b"partial"))),
        (WAN, partial_frame(from_wan(S1, UDP(sport=53, dport=5000) / b"partial back"))),
        _tcp_segment(LAN, "PA", b"data" * 100, 2006), _tcp_segment(WAN, "A", b"", 2406),
        _tcp_segment(WAN, "PA", b"reply" * 50, 2406),
        (LAN, partial_frame(from_lan(C2, S2, TCP(sport=41000, dport=8080, flags="PA", seq=3000, ack=9000)
                                      / Raw(bytes(4000))), gso_type=1, gso_size=1448)),
        _tcp_segment(LAN, "FA", b"", 7000), _tcp_segment(WAN, "R", b"", 7000),
        _gre(LAN, C1, S1, 99), _gre(WAN, C1, S1, 7), _gre(WAN, C1, S1, 8),
        _udp(LAN, C1, S1, 1701, 1701, l2tp.data(5, 3)), _udp(WAN, C1, S1, 1701, 1701, l2tp.data(77, 44)),
        _udp(WAN, C1, S1, 1701, 1701, l2tp.data(77, 44, length=False)),
        _udp(WAN, C1, S1, 1701, 1701, l2tp.data(77, 44, sequence=True, offset=b"\0\0")),
        _udp(WAN, C1, S1, 1701, 1701, l2tp.hello(5)),
        _udp(LAN, C1, S2, 4500, 4500, bytes.fromhex("00001001") + bytes(40)),
        _udp(WAN, C1, S2, 4500, 4500, bytes.fromhex("00002001") + bytes(40)),
        _udp(LAN, C1, S2, 4500, 4500, bytes.fromhex("00001009") + bytes(40)),      # a new SPI: Python's
        _udp(LAN, C1, S2, 4500, 4500, ike.KEEPALIVE),
        _esp(LAN, C1, S2, 0x1001), _esp(WAN, C1, S2, 0x2001), _esp(LAN, C2, S2, 0x1002, 200),
        _esp(WAN, C2, S2, 0x2002), _esp(WAN, C1, S2, 0x2003), _esp(LAN, C1, S2, 0x1005),
        (LAN, wire(from_lan(C1, S1, UDP(sport=5000, dport=53) / b"ttl", ttl=1))),
        (LAN, wire(from_lan(C1, S1, UDP(sport=5000, dport=53) / bytes(1600)))),             # beyond the MTU
        (LAN, wire(from_lan(C1, S1, UDP(sport=5000, dport=53) / b"frag", flags="MF"))),
        (LAN, wire(from_lan(C1, WAN_IP, ICMP(id=5)))), (LAN, wire(from_lan(C3, S1, ICMP(id=9)))),
        (WAN, wire(from_wan(S1, ICMP(type=0, id=9)))),
        (WAN, wire(from_wan(S1, UDP(sport=53, dport=5999) / b"unsolicited"))),
        (LAN, wire(Ether(src=MACS[C1], dst=LAN_MAC) / IP(src=C1, dst=S1, chksum=1) / UDP(sport=5000, dport=53))),
    ]
    return tuple((port, bytes(frame)) for port, frame in frames)


def played(seed: int = 1, **sections) -> tuple[Twin, tuple]:
    """A twin after ``setup``, compared, and the traffic to send it: ``traffic()`` and C2's L2TP tunnel, whose
    Tunnel ID the router translated (C1 holds 5 towards S1), answered by the LNS and carrying data."""
    twin = Twin(seed, **sections)
    for step in setup():
        twin.wake([step])
    c2 = next(t for t in twin.python.helper_named["l2tp"].flows() if t.inside_ip == _address(C2))
    for step in (_udp(WAN, C2, S1, 1701, 1701, l2tp.sccrp(c2.translated, 78)),
                 _udp(LAN, C2, S1, 1701, 1701, l2tp.scccn(78))):
        twin.wake([step])
    call = _second_pptp_call(twin)
    twin.check()
    port = next(s.outside_port for s in twin.python.nat.out_sessions.values()
                if s.inside_ip == _address(C2) and s.inside_port == 5000)
    c2_data = tuple((port, bytes(frame)) for port, frame in (
        _udp(WAN, C2, S1, 1701, 1701, l2tp.data(c2.translated, 45)), _udp(LAN, C2, S1, 1701, 1701, l2tp.data(78, 9)),
        _gre(LAN, C2, S1, 98), _gre(WAN, C2, S1, call.translated_call_id),
        (LAN, partial_frame(from_lan(C2, S1, UDP(sport=5000, dport=53) / b"partial, translated"))),
        (WAN, partial_frame(from_wan(S1, UDP(sport=53, dport=port) / b"partial, translated back"))),
        _udp(LAN, C2, S1, 5000, 53, b"translated"), (WAN, wire(from_wan(S1, UDP(sport=53, dport=port) / b"back")))))
    return twin, traffic() + c2_data


def _second_pptp_call(twin: Twin):
    """C2 calls S1 with the Call ID C1's call has (7): the router translates it, and the server's GRE to C2
    carries the translated one, which the router puts back to 7."""
    def conversation(peer: int) -> list:
        messages = [(True, bytes(pptp.SCCRQ())), (False, bytes(pptp.SCCRP())),
                    (True, bytes(pptp.OCRQ(call_id=7, call_serial_number=2))),
                    (False, bytes(pptp.OCRP(call_id=98, peer_call_id=peer, result_code=1)))]
        return tcp_connection(C2, S1, 40010, 1723, messages)[:-3]
    first = conversation(0)
    for step in first[:-1]:
        twin.wake([step])
    call = next(c for c in twin.python.helper_named["pptp"].flows() if c.inside_ip == _address(C2))
    twin.wake([conversation(call.translated_call_id)[-1]])
    assert call.translated_call_id != 7
    return call


def _address(text: str) -> int:
    return int.from_bytes(bytes(int(x) for x in text.split(".")), "big")


NEW_MACS = {C1: "02:00:00:00:0a:11", C2: "02:00:00:00:0a:12", C3: "02:00:00:00:0a:13"}
"""What a LAN host's MAC becomes when ``Twin.arp`` moves it."""
