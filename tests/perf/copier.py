"""The I/O ceiling for `make bench`: a TAP-to-TAP copier that does no routing at all.

    python -m tests.perf.copier TAP_A TAP_B

Every frame read from one TAP is written, unchanged (virtio-net header
included), to the other: no parsing, no ARP, no NAT.  Nothing in Python on a
TAP can forward faster, so vpnrouter's figures are read against it as well as
against Linux's kernel NAT (../shared/REFERENCE.md, "Speed on TAP").

For the comparison to be fair the copier does its I/O as the router does
(router/runtime/loop.py and router/runtime/tap.py):
- the TAPs are ``TapPort``s: IFF_VNET_HDR, 12-byte headers and the same
  offloads, so TCP arrives as the same 64 KB super-frames;
- uvloop, one ``add_reader`` per TAP; on each wake-up the TAP is read with
  ``os.readv`` into its one reused buffer until EAGAIN or ``BATCH`` frames (the
  router's own constant), so the other TAP gets its turn;
- each frame is written to the other TAP at once, with ``os.write`` on the
  non-blocking fd; a frame the TAP does not take is dropped and counted, as
  ``TapPort.write`` and ``Runtime._flush`` do;
- SIGTERM and SIGINT end the loop; the TAPs are closed with their offloads off.
Where it differs, because that is the router's work and not I/O: it writes a
memoryview of the read buffer where the router copies the frame out
(``buffer[:n]``) to rewrite it in place; it reads no clock, keeps no timer and
publishes no events after a wake-up (``Runtime._after_work``); it counts
frames once per wake-up rather than per flushed outbox.

It prints "ready" on stdout once both TAPs are being read, and the frames it
copied and dropped on stderr when it stops.

``CopierLab`` / ``copier_lab()`` put it where the router stands in the lab
(router/lab/topology.py): in the switch namespace, on lan0 (br-lan) and wan0
(br-wan), which makes the two bridges one Ethernet segment.  Clients and
servers keep their addresses (bench.py's SERVER 198.51.100.10 is unchanged);
each gets an on-link route to the other side's /24, so a client ARPs for the
server itself, through the copier, instead of for a router.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from router.lab.topology import LAN_PREFIX, WAN_PREFIX, Lab, LabError
from router.runtime.loop import BATCH
from router.runtime.tap import TapPort

ROOT = Path(__file__).resolve().parents[2]


class Copier:
    """Two TAPs, each drained on wake-up into the other."""

    def __init__(self, taps: tuple[TapPort, TapPort]):
        self.taps = taps
        self.views = tuple(memoryview(tap.buffer) for tap in taps)
        self.copied = [0, 0]
        """Frames read from taps[i] (and handed to the other TAP)."""
        self.dropped = [0, 0]
        """Of those, frames the other TAP did not take."""
        self.failed: OSError | None = None
        self._stop = lambda: None

    async def run(self, ready=lambda: None) -> None:
        loop = asyncio.get_running_loop()
        stopped = asyncio.Event()
        self._stop = stopped.set
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopped.set)
        for port, tap in enumerate(self.taps):
            loop.add_reader(tap.fd, self._readable, port)
        ready()
        try:
            await stopped.wait()
        finally:
            for tap in self.taps:
                loop.remove_reader(tap.fd)

    def _readable(self, port: int) -> None:
        """Drain one TAP into the other, until it is empty or a batch is done (as ``Runtime._readable``)."""
        readv, write = os.readv, os.write
        fd, iov, view = self.taps[port].fd, self.taps[port].iov, self.views[port]
        out = self.taps[1 - port].fd
        count = 0
        try:
            for count in range(BATCH):
                n = readv(fd, iov)
                try:
                    write(out, view[:n])
                except OSError:       # BlockingIOError included: dropped, as TapPort.write does
                    self.dropped[port] += 1
            count = BATCH
        except BlockingIOError:
            pass
        except OSError as exc:        # the TAP went away under us: stop
            self.failed = exc
            self._stop()
        self.copied[port] += count

    def summary(self) -> str:
        a, b = (tap.name for tap in self.taps)
        return (f"copier: {a} -> {b} {self.copied[0]} frames ({self.dropped[0]} dropped), "
                f"{b} -> {a} {self.copied[1]} frames ({self.dropped[1]} dropped)")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(__doc__.split("\n\n")[1].strip(), file=sys.stderr)
        return 2
    try:          # as router.runtime.loop.run
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    first = TapPort(args[0])
    try:
        second = TapPort(args[1])
    except Exception:
        first.close()
        raise
    copier = Copier((first, second))
    try:
        asyncio.run(copier.run(ready=lambda: print("ready", flush=True)))
    finally:
        for tap in (first, second):
            tap.close()
        print(copier.summary(), file=sys.stderr, flush=True)
    if copier.failed is not None:
        print(f"copier: {copier.failed}", file=sys.stderr)
        return 1
    return 0


# -- the lab ------------------------------------------------------------------------------------------


@dataclass
class CopierLab(Lab):
    """The router's lab with the copier on lan0/wan0 in place of the router, clients and servers on one segment.

    ``router_proc`` holds the copier, so bench.py's ``_router_cpu`` measures it and ``down()`` stops it.
    """

    prefix: str = "bc"
    clients: int = 1
    servers: int = 1

    def up(self, progress=lambda msg: None) -> None:
        super().up(progress)
        progress("one segment across the copier")
        for i in range(1, self.clients + 1):
            self.run_in(self.client(i), "ip", "route", "add", f"{WAN_PREFIX}.0/24", "dev", "eth0")
        for j in range(1, self.servers + 1):
            self.run_in(self.server(j), "ip", "route", "add", f"{LAN_PREFIX}.0/24", "dev", "eth0")

    def start_copier(self, wait: float = 30.0) -> subprocess.Popen:
        log = open(self.state_dir / "copier.log", "w")
        self.router_proc = subprocess.Popen(
            ["ip", "netns", "exec", self.switch, sys.executable, "-m", "tests.perf.copier", "lan0", "wan0"],
            stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT, start_new_session=True)
        (self.state_dir / "copier.pid").write_text(str(self.router_proc.pid))   # `ip netns exec` execs: same pid
        ready, _, _ = select.select([self.router_proc.stdout], [], [], wait)
        if not ready or self.router_proc.stdout.readline().strip() != "ready":
            self.stop_router()
            raise LabError(f"the copier did not start: {(self.state_dir / 'copier.log').read_text()[-2000:]}")
        return self.router_proc


@contextlib.contextmanager
def copier_lab(progress=lambda msg: None, **kw) -> Iterator[CopierLab]:
    """A ``CopierLab`` up with its copier running; everything removed on the way out (errors and Ctrl-C too)."""
    lab = CopierLab(**kw)
    try:
        lab.up(progress)
        progress("copier")
        lab.start_copier()
        yield lab
    finally:
        lab.down()


if __name__ == "__main__":
    sys.exit(main())
