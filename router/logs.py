"""Log lines that cannot flood: at most one per kind and interval, the next one counting what was left out."""

from __future__ import annotations

import logging
import time

INTERVAL = 10.0
"""Seconds between two lines of one kind."""


class Throttle:
    """Rate-limits one logger's warnings by kind: a burst of a thousand bad clients is two lines, not a thousand."""

    def __init__(self, logger: logging.Logger, interval: float = INTERVAL, clock=time.monotonic):
        self.logger, self.interval, self.clock = logger, interval, clock
        self._kinds: dict[str, list] = {}
        """kind -> [when its last line was written, lines left out since]."""

    def warning(self, kind: str, message: str, *args) -> bool:
        """Log ``message % args`` unless a line of ``kind`` went out less than ``interval`` ago; True if logged."""
        now = self.clock()
        state = self._kinds.get(kind)
        if state is not None and now - state[0] < self.interval:
            state[1] += 1
            return False
        if state is not None and state[1]:
            message, args = message + " (%d more like it in the last %.0f s not logged)", (*args, state[1],
                                                                                            now - state[0])
        self.logger.warning(message, *args)
        self._kinds[kind] = [now, 0]
        return True
