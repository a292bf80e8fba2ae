"""Log lines that cannot flood: a few per kind and interval, the next one counting what was left out.

The router logs to stderr (the journal, under systemd): one line per significant event, the data plane's
VPN events and switch and profile changes among them (``event_line``), at most ``burst`` lines of a kind in
``interval`` seconds.  A burst of a thousand bad clients or a thousand calls is a few lines, and the next
line of that kind says how many were not logged.
"""

from __future__ import annotations

import logging
import time

from .dataplane.events import PacketDropped, ProfileChanged, SwitchChanged, VpnEvent

INTERVAL = 10.0
"""Seconds of a kind's window."""


class Throttle:
    """Rate-limits one logger's lines by kind."""

    def __init__(self, logger: logging.Logger, interval: float = INTERVAL, burst: int = 1, clock=time.monotonic):
        self.logger, self.interval, self.burst, self.clock = logger, interval, burst, clock
        self._kinds: dict[str, list] = {}
        """kind -> [when its window began, lines logged in it, lines left out since the last one logged]."""

    def warning(self, kind: str, message: str, *args) -> bool:
        return self.log(logging.WARNING, kind, message, *args)

    def log(self, level: int, kind: str, message: str, *args) -> bool:
        """Log ``message % args`` unless ``burst`` lines of ``kind`` went out in this window; True if logged."""
        now = self.clock()
        state = self._kinds.get(kind)
        if state is None or now - state[0] >= self.interval:
            state = self._kinds[kind] = [now, 0, state[2] if state else 0]
        if state[1] >= self.burst:
            state[2] += 1
            return False
        if state[2]:
            message, args = message + " (%d more like it not logged)", (*args, state[2])
        self.logger.log(level, message, *args)
        state[1] += 1
        state[2] = 0
        return True


def event_line(event) -> tuple[int, str, str] | None:
    """(level, kind, text) of the log line for a data-plane event: VPN events and changes at INFO, drops and
    sessions at DEBUG (the control socket streams them all)."""
    if isinstance(event, VpnEvent):
        details = " ".join(f"{key}={value}" for key, value in event.details if key != "summary")
        summary = dict(event.details).get("summary")
        return logging.INFO, f"{event.vpn}:{event.kind}", (f"{event.vpn} {event.kind}: {details}"
                                                           + (f" ({summary})" if summary else ""))
    if isinstance(event, SwitchChanged):
        return logging.INFO, "switch", f"passthrough {event.name} {event.mode}"
    if isinstance(event, ProfileChanged):
        return logging.INFO, "profile", f"profile {event.name}"
    if isinstance(event, PacketDropped):
        return logging.DEBUG, f"drop:{event.reason}", f"dropped on {event.port}: {event.reason} {event.summary}"
    return None             # sessions opened and closed: too many for a log, the control socket tells them
