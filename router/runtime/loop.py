"""The thin I/O layer: drives the pure ``Router`` from two TAP ports, a timer and the control socket.

On each wake-up a port is read until it is empty (or a batch limit is
reached, so the other port gets its turn), every frame goes through
``receive_frame`` with the time of the wake-up, and what the router put in
its outbox is written at once.
"""

from __future__ import annotations

import asyncio
import os
import logging
import signal
import time

from .. import state
from ..config import Config
from ..control.server import ControlServer
from ..dataplane.router import LAN, WAN
from ..fastpath import make_router
from ..helpers.registry import build_helpers
from ..logs import Throttle, event_line
from ..version import interpreter, package_version
from .tap import TapPort

log = logging.getLogger("vpnrouter")
PORT_COUNTERS = (("frames_out_lan", "bytes_out_lan", "write_errors_lan"),
                 ("frames_out_wan", "bytes_out_wan", "write_errors_wan"))
BATCH = 256
EVENT_LINES = 20
"""Log lines of one kind of event in ten seconds (router/logs.py); the next says how many were left out."""
MAX_TIMER = 1.0
"""Longest sleep between timer checks, in seconds."""


class Runtime:
    def __init__(self, config: Config, taps: tuple[TapPort, TapPort], fresh: bool = False):
        self.config = config
        self.router = make_router(config, build_helpers(config))
        if self.router.python_only:
            log.info("forwarding in Python only: %s", self.router.python_only)
        self.taps = taps
        self.state_status: dict = {}
        self.offset = self._restore(fresh)
        """Added to time.monotonic(): the router's clock goes on from where the saved state left it."""
        self.clock = lambda: time.monotonic() + self.offset
        self.saver: int | None = None
        """The pid of the child process writing the state in the background, while it runs."""
        self.event_log = Throttle(logging.getLogger("vpnrouter.events"), burst=EVENT_LINES)
        self.control = ControlServer(self.router, self.clock, config.control_socket, config.control_mode,
                                     on_change=self._publish, group=config.control_group,
                                     max_clients=config.control_max_clients,
                                     about={"python": interpreter(), "state": self.state_status})
        self.loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.stopped = asyncio.Event()

    async def run(self) -> None:
        self.loop = asyncio.get_running_loop()
        await self.control.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self.stopped.set)
        self.router.start(self.clock())
        self._flush()
        for port, tap in enumerate(self.taps):
            self.loop.add_reader(tap.fd, self._readable, port)
        log.info("forwarding between %s (LAN) and %s (WAN)", self.taps[LAN].name, self.taps[WAN].name)
        self._log_wan()
        if self.config.state_file and self.config.state_interval:
            self.loop.call_later(self.config.state_interval, self._save_in_background)
        try:
            await self.stopped.wait()
        finally:
            for tap in self.taps:
                self.loop.remove_reader(tap.fd)
            if self._timer is not None:
                self._timer.cancel()
            await self.control.close()
            self._reap_saver(wait=True)
            self.save()

    def _log_wan(self) -> None:
        """An IPv6 WAN in one line, and, where the passthrough switches change nothing (DS-Lite), that too."""
        wan = self.router.wan_status()
        if wan["mode"] == "ipv4":
            return
        tunnel = wan["map_e"] or wan["ds_lite"]
        peer = f"BR {tunnel['br']}" if wan["map_e"] else f"AFTR {tunnel['aftr']}"
        log.info("WAN %s on %s, softwire to %s (IPv4 MTU %d), LAN IPv6 %s", wan["mode"], wan["ipv6"], peer,
                 tunnel["mtu"], wan["lan_prefix6"] or "none")
        if not wan["passthrough_effective"]:
            log.warning("passthrough switches have no effect: %s", wan["note"])

    @property
    def fast(self) -> bool:
        """Whether the fast path runs (``router.fastpath.FastPathRouter``, which has the flow cache)."""
        return self.router.cache is not None

    def _readable(self, port: int) -> None:
        """Drain one TAP: read, route, write, until it is empty or a batch is done (through the fast path's flow
        cache where it runs, ``_drain_fast``)."""
        if self.router.cache is not None:
            return self._drain_fast(port)
        self._drain_python(port)

    def _drain_fast(self, port: int) -> None:
        """The flow cache reads, forwards and writes what it has entries for, in C, and hands each frame it has
        none for to Python before it reads the next, so no flow is reordered."""
        router, tap, other = self.router, self.taps[port], self.taps[1 - port]
        receive = router.python_receive
        same, onward = router.outbox[port], router.outbox[1 - port]
        write, out_fd, buffer = os.write, other.fd, tap.buffer
        now = self.clock()
        python = [0, 0, 0]      # frames Python sent on, their bytes, failed writes

        def slow(n: int) -> None:         # the cache has synced first if it had counted anything
            receive(port, buffer[:n], now)
            if onward:
                for frame in onward:
                    try:
                        write(out_fd, frame)
                        python[1] += len(frame)
                    except OSError:     # BlockingIOError included: the TAP's queue is full
                        python[2] += 1
                python[0] += len(onward)
                onward.clear()
            if same:
                self._flush()

        try:
            written, size, failed, _ = router.cache.drain(port, tap.fd, out_fd, buffer, now, BATCH, slow, router.sync)
        except OSError as exc:  # the TAP went away under us: say so, and let the loop end
            log.error("reading %s: %s", tap.name, exc)
            self.stopped.set()
            written = size = failed = 0
        sent, failed = written + failed + python[0], failed + python[2]
        if sent:
            self._count(1 - port, sent - failed, size + python[1], failed)
        self._after_work()

    def _drain_python(self, port: int) -> None:
        """Drain one TAP in Python: read, route, write, until it is empty or a batch is done.

        The usual result of a frame, one frame to the other port, is written
        here with the counting done once per wake-up; anything else (ARP
        replies, ICMP errors back, fragments) goes through ``_flush``.
        """
        tap, other = self.taps[port], self.taps[1 - port]
        receive = self.router.receive_frame
        outbox = self.router.outbox
        same, onward = outbox[port], outbox[1 - port]
        readv, write, fd, out_fd, view, buffer = os.readv, os.write, tap.fd, other.fd, tap.iov, tap.buffer
        sent = size = failed = 0
        now = self.clock()
        try:
            for _ in range(BATCH):
                n = readv(fd, view)
                receive(port, buffer[:n], now)
                if onward:
                    for frame in onward:
                        try:
                            write(out_fd, frame)
                            size += len(frame)
                        except OSError:     # BlockingIOError included: the TAP's queue is full
                            failed += 1
                    sent += len(onward)
                    onward.clear()
                if same:
                    self._flush()
        except BlockingIOError:
            pass
        except OSError as exc:  # the TAP went away under us: say so, and let the loop end
            log.error("reading %s: %s", tap.name, exc)
            self.stopped.set()
        if sent:
            self._count(1 - port, sent - failed, size, failed)
        self._after_work()

    def _flush(self) -> None:
        """Write what the router sent; count what was written, and failed writes apart."""
        for port in (LAN, WAN):
            outbox = self.router.outbox[port]
            if outbox:
                write = self.taps[port].write
                written = size = 0
                for frame in outbox:
                    if write(frame):
                        written += 1
                        size += len(frame)
                self._count(port, written, size, len(outbox) - written)
                outbox.clear()

    def _count(self, port: int, written: int, size: int, failed: int) -> None:
        counters = self.router.counters
        frames, octets, errors = PORT_COUNTERS[port]
        counters[frames] += written
        counters[octets] += size      # as bytes_in: the frames as the TAP takes them
        if failed:
            counters[errors] += failed

    def _after_work(self) -> None:
        self._publish()
        if self._timer is None:
            self._schedule()

    def _publish(self) -> None:
        """Hand what happened to the control socket's subscribers (with the fast path, after what it forwarded
        is counted: an event's session shows what it would in Python; every other reader syncs itself)."""
        router = self.router
        if router.nat.closed:
            router.report_closed(self.clock())
        if router.events:
            if self.fast:
                router.sync()
            publish, event_log = self.control.publish, self.event_log
            while (event := router.next_event()) is not None:
                line = event_line(event)
                if line is not None:
                    event_log.log(*line)
                publish(event)

    def _schedule(self) -> None:
        """Wake up for the router's next deadline, or in a second at the latest.

        Deadlines added while a timer is pending are picked up when it fires,
        so the per-frame path never asks for the timer.
        """
        at = self.router.get_timer()
        delay = MAX_TIMER if at is None else min(MAX_TIMER, max(0.001, at - self.clock()))
        self._timer = self.loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.router.handle_timer(self.clock())
        self._flush()
        self._after_work()

    # -- the state file (router/state.py) -----------------------------------------------------------

    def _restore(self, fresh: bool) -> float:
        """Take up the state file's records, if there is a usable one; the clock offset that continues its time.
        What happened is said in one log line, and in ``ctl status`` (``state``)."""
        path = self.config.state_file
        self.state_status = {"file": path or None, "interval": self.config.state_interval, "restored": None,
                             "refused": None, "fresh": fresh}
        if not path:
            return 0.0
        if fresh:
            log.info("state file %s not read (--fresh): the tables start empty", path)
            return 0.0
        try:
            with open(path, "rb") as f:
                saved = state.load(f.read(), self.config)
        except FileNotFoundError:
            return 0.0
        except (OSError, state.StateError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else str(exc)
            log.warning("state file %s ignored: %s", path, why)
            self.state_status["refused"] = why
            return 0.0
        resume = saved.resume_at(time.time())
        tally = self.router.restore(saved.records, saved.clock)
        restored = state.summary(saved, tally, time.time())
        self.state_status["restored"] = restored
        log.info("state file %s: %s", path, state.describe(restored))
        return resume - time.monotonic()

    def save(self) -> None:
        """Write the state file now, atomically: a new file, flushed to disk, then renamed over the old."""
        path = self.config.state_file
        if not path:
            return
        try:
            write_atomically(path, self._snapshot())
        except OSError as exc:
            log.error("state file %s not written: %s", path, exc.strerror or exc)
            return
        log.info("state file %s: %d sessions written", path, len(self.router.nat))

    def _snapshot(self) -> bytes:
        return state.dump(self.config, self.router.state_records(), self.clock(), time.time(), package_version())

    def _save_in_background(self) -> None:
        """Every state.interval seconds: a child process, a copy-on-write snapshot of this one, writes the
        state while this one forwards on (as Redis's BGSAVE does)."""
        self.loop.call_later(self.config.state_interval, self._save_in_background)
        if not self._reap_saver():
            return          # the last one is still writing
        pid = os.fork()
        if pid == 0:
            try:
                for tap in self.taps:      # the TAPs stay this process's: a router started after it may open them
                    os.close(tap.fd)
                logging.disable(logging.INFO)      # the parent logs; the child only writes
                write_atomically(self.config.state_file, self._snapshot())
                code = 0
            except BaseException:
                code = 1
            os._exit(code)
        self.saver = pid

    def _reap_saver(self, wait: bool = False) -> bool:
        """Whether no background save is running (after collecting one that ended)."""
        if self.saver is None:
            return True
        pid, status = os.waitpid(self.saver, 0 if wait else os.WNOHANG)
        if pid == 0:
            return False
        if os.waitstatus_to_exitcode(status) != 0:
            log.error("state file %s: the background save failed", self.config.state_file)
        self.saver = None
        return True


def write_atomically(path: str, data: bytes) -> None:
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)
    temporary = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)


def open_taps(config: Config) -> tuple[TapPort, TapPort]:
    offloads = config.wan_link is None     # an IPv6 WAN's softwire: no super-frames (router.dataplane.softwire)
    lan = TapPort(config.lan.tap, offloads)
    try:
        wan = TapPort(config.wan.tap, offloads)
    except Exception:
        lan.close()
        raise
    return lan, wan


def run(config: Config, fresh: bool = False) -> None:
    """Run the router until SIGTERM or SIGINT (``fresh``: without reading the state file)."""
    try:
        import uvloop
        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency
        pass
    taps = open_taps(config)
    try:
        asyncio.run(Runtime(config, taps, fresh).run())
    finally:
        for tap in taps:
            tap.close()
