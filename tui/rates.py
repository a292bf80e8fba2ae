"""Packets and bytes per second per port, from two readings of the router's counters (pure).

``status()["counters"]`` has ``frames_in_<port>``, ``frames_out_<port>``,
``bytes_in_<port>`` and ``bytes_out_<port>`` (``schema.PORTS``), totals since
the router started.  A rate is the difference of two readings over the
difference of the router's own uptime, so a slow or late reading does not
distort it.  A reading whose uptime went back or whose counters fell means the
router restarted: the history starts again.
"""

from __future__ import annotations

from collections import deque

from router.control import schema

HISTORY = 120
"""Readings kept per series: two minutes at one status a second."""
SERIES = ("pps_in", "pps_out", "bps_in", "bps_out")
"""Packets in, packets out, bytes in, bytes out, per second."""
_COUNTERS = {"pps_in": "frames_in", "pps_out": "frames_out", "bps_in": "bytes_in", "bps_out": "bytes_out"}


class Rates:
    def __init__(self, history: int = HISTORY) -> None:
        self.length = history
        self.history: dict[str, dict[str, deque[float]]] = {}
        self.current: dict[str, dict[str, float | None]] = {}
        self._last: tuple[float, dict[str, int]] | None = None
        self.reset()

    def reset(self) -> None:
        self.history = {port: {name: deque(maxlen=self.length) for name in SERIES} for port in schema.PORTS}
        self.current = {port: {name: None for name in SERIES} for port in schema.PORTS}
        self._last = None

    def sample(self, counters: dict, uptime: float | None) -> None:
        """Take one reading of the counters at the router's ``uptime``."""
        if uptime is None:
            return
        reading = {f"{_COUNTERS[name]}_{port}": int(counters.get(f"{_COUNTERS[name]}_{port}", 0))
                   for port in schema.PORTS for name in SERIES}
        last = self._last
        if last is not None:
            last_uptime, last_reading = last
            if uptime == last_uptime:
                return
            if uptime < last_uptime or any(reading[k] < last_reading[k] for k in reading):
                self.reset()                            # the router restarted
            else:
                dt = uptime - last_uptime
                for port in schema.PORTS:
                    for name in SERIES:
                        key = f"{_COUNTERS[name]}_{port}"
                        rate = (reading[key] - last_reading[key]) / dt
                        self.current[port][name] = rate
                        self.history[port][name].append(rate)
        self._last = (uptime, reading)
