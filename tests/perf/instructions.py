"""Instructions per forwarded frame, counted by valgrind: the figure of `make bench` that noise cannot move.

    python -m tests.perf.instructions            # the table: copier and vpnrouter, UDP out and in
    python -m tests.perf.instructions --worker WHO DIRECTION FRAMES   # what valgrind runs

On a shared 2-core machine the rates of `make bench` move by a third between
runs, so a change to the per-frame path is judged here as well.  The worker
drives the real ``Runtime._readable`` (router/runtime/loop.py) or
``Copier._readable`` (tests/perf/copier.py) with fake TAPs: frames arrive on a
``SOCK_DGRAM`` socketpair, 100 per wake-up, and leave into /dev/null, so the
system calls are as cheap as they get and what is counted is the Python.
The router is the one the unit tests use (tests/unit/frames.py): its ARP
cache knows the hosts, and one UDP session exists, so every frame is an
established flow's 64-byte datagram.

``callgrind`` counts the user-space instructions of the whole process; the
worker is run for two frame counts and the difference, divided by the
difference of the counts, leaves start-up out.  Both runs use the same hash
seed, so dictionaries are laid out alike and the count repeats to the
instruction (with random seeds it moved by a few hundred).  The worker checks that every
frame it pushed was forwarded, so a figure never comes from frames dropped
early.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WAKE_UP = 100
"""Frames queued before each wake-up."""
FRAMES = (1_000, 11_000)
"""The two runs' frame counts."""
CASES = (("copier", "out"), ("vpnrouter", "out"), ("vpnrouter", "in"), ("vpnrouter", "unsolicited"),
         ("python", "out"), ("python", "in"), ("map-e", "out"), ("map-e", "in"))
"""``vpnrouter``: the router as it runs by default, with the fast path; ``python``: with ``[dataplane] fastpath =
false``, every frame through the Python data plane.  ``unsolicited``: UDP from a WAN host to a port no session
has, which the router drops (a WAN flood), always in Python.  ``map-e``: the router on an IPv6 WAN
(``[wan] mode = "map-e"``, always in Python), out into the softwire and in from the BR."""
WHO = ("copier", "vpnrouter", "python", "map-e")


class FakeTap:
    """What ``Runtime`` and ``Copier`` use of a ``TapPort``: a readable fd, its buffer, and a write."""

    def __init__(self, name: str, fd: int, sink: int):
        from router.runtime.tap import READ_SIZE
        self.name, self.fd, self.sink = name, fd, sink
        self.buffer = bytearray(READ_SIZE)
        self.iov = [self.buffer]

    def write(self, frame: bytearray) -> bool:
        try:
            os.write(self.sink, frame)
            return True
        except OSError:
            return False


def _frames(router) -> tuple[bytes, bytes, bytes]:
    """One UDP datagram out of C1 to S1 (which opens the session), the server's answer to it, and a datagram
    from S2 that nobody asked for."""
    from scapy.layers.inet import UDP
    from tests.unit.frames import C1, LAN, S1, S2, WAN, from_lan, from_wan, step, wire
    out = wire(from_lan(C1, S1, UDP(sport=5000, dport=5201) / (b"x" * 18)))
    sent = step(router, LAN, out)[WAN]
    outside_port = sent[0][UDP].sport
    answer = wire(from_wan(S1, UDP(sport=5201, dport=outside_port) / (b"y" * 18)))
    unsolicited = wire(from_wan(S2, UDP(sport=5201, dport=33333) / (b"z" * 18)))
    return bytes(out), bytes(answer), bytes(unsolicited)


def _softwire_frames(router) -> tuple[bytes, bytes, bytes]:
    """The same under MAP-E: out of C1 to S1, and S1's answer from the BR, in IPv6."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from tests.unit.frames import C1, LAN, LAN_MAC, MACS, S1, WAN, step, wire
    from tests.unit.test_softwire import MAP_IPV4, from_br
    out = wire(Ether(src=MACS[C1], dst=LAN_MAC) / IP(src=C1, dst=S1) / UDP(sport=5000, dport=5201) / (b"x" * 18))
    outside_port = step(router, LAN, out)[WAN][0][UDP].sport
    answer = wire(from_br(IP(src=S1, dst=MAP_IPV4) / UDP(sport=5201, dport=outside_port) / (b"y" * 18)))
    return bytes(out), bytes(answer), b""


def worker(who: str, direction: str, frames: int) -> None:
    """Push ``frames`` frames through one ``_readable`` and check they all came out."""
    from router.config import parse
    from router.runtime.loop import Runtime
    from tests.perf.copier import Copier
    from tests.unit.frames import LAN, WAN, config, make_router
    feed, read_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    read_end.setblocking(False)
    sink = os.open(os.devnull, os.O_WRONLY)
    port = LAN if direction == "out" else WAN
    taps = [FakeTap("wan" if p else "lan", sink, sink) for p in (LAN, WAN)]
    taps[port].fd = read_end.fileno()
    if who == "map-e":
        from tests.unit.test_softwire import softwire
        router = softwire()
        frame = _softwire_frames(router)[("out", "in").index(direction)]
    else:
        router = make_router()
        frame = _frames(router)[("out", "in", "unsolicited").index(direction)]
    if who == "copier":
        target = Copier(tuple(taps))
        forwarded = lambda: target.copied[port] - target.dropped[port]  # noqa: E731
    else:
        target = Runtime(parse(config()), tuple(taps))
        target.router = router
        target.clock = lambda: 1.0          # the time the router's ARP entries and session were made in
        target._schedule = lambda: None
        counter = "drop_unsolicited" if direction == "unsolicited" else ("frames_out_wan", "frames_out_lan")[port]
        before = router.counters[counter]
        forwarded = lambda: router.counters[counter] - before  # noqa: E731
    for _ in range(frames // WAKE_UP):
        for _ in range(WAKE_UP):
            feed.send(frame)
        target._readable(port)
    if forwarded() != frames:
        raise SystemExit(f"instructions: {who} forwarded {forwarded()} of {frames} frames")


def count(who: str, direction: str, frames: int) -> int:
    """User-space instructions of one worker run."""
    env = {**os.environ, "VPNROUTER_TEST_DATAPLANE": "python" if who in ("python", "map-e") else "fast",
           "PYTHONHASHSEED": "0"}     # the same dictionaries' layout every run: the count repeats
    result = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, "-m",
         "tests.perf.instructions", "--worker", who, direction, str(frames)],
        cwd=ROOT, capture_output=True, text=True, timeout=1800, env=env)
    found = re.search(r"Collected : (\d+)", result.stderr)
    if result.returncode != 0 or found is None:
        raise RuntimeError(f"valgrind {who} {direction}: exit {result.returncode}: {result.stderr[-2000:]}")
    return int(found.group(1))


def per_frame(who: str, direction: str) -> int:
    small, large = (count(who, direction, n) for n in FRAMES)
    return round((large - small) / (FRAMES[1] - FRAMES[0]))


def measure(progress=lambda step: None) -> dict:
    """Instructions per frame for each case: {"copier_out": ..., "vpnrouter_out": ..., "vpnrouter_in": ...,
    "vpnrouter_unsolicited": ..., "python_out": ..., "python_in": ...}."""
    figures = {}
    for who, direction in CASES:
        progress(f"instructions per frame: {who}, UDP {direction} (valgrind)")
        figures[f"{who}_{direction}"] = per_frame(who, direction)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.perf.instructions", description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=3, metavar=("WHO", "DIRECTION", "FRAMES"),
                        help="run one worker (copier|vpnrouter, out|in, a frame count) instead of the table")
    args = parser.parse_args(argv)
    if args.worker:
        who, direction, frames = args.worker
        if who not in WHO or direction not in ("out", "in", "unsolicited") or not frames.isdigit():
            parser.error("--worker takes copier|vpnrouter|python|map-e, out|in|unsolicited and a number of frames")
        worker(who, direction, int(frames))
        return 0
    figures = measure(lambda step: print(f"{step}...", file=sys.stderr, flush=True))
    for who, direction in CASES:
        print(f"{who:<10} UDP 64 B {direction:<11} {figures[f'{who}_{direction}']:>8} instructions/frame")
    return 0


if __name__ == "__main__":
    sys.exit(main())
