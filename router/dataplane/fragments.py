"""Fragments of NATed datagrams (RFC 4787 REQ-14).

Only a datagram's first fragment carries the ports that find its session.
When it is translated, the session is remembered under the datagram's
(src, dst, protocol, id) as it arrived, so later fragments follow it.
Fragments that come before their first fragment wait, a bounded number of
datagrams for a bounded time, and are translated as soon as it arrives.
"""

from __future__ import annotations

from collections import OrderedDict

MAX_HELD_PER_DATAGRAM = 64


class FragmentTracker:
    def __init__(self, timeout: float, max_datagrams: int):
        self.timeout = timeout
        self.max_datagrams = max_datagrams
        self.known: OrderedDict[tuple, tuple[object, float]] = OrderedDict()
        """(src, dst, proto, id) -> (session, expiry)."""
        self.held: OrderedDict[tuple, tuple[list, float]] = OrderedDict()
        """(src, dst, proto, id) -> (frames waiting for their first fragment, expiry)."""
        self.dropped = 0
        """Held fragments given up on (timed out or pushed out), not yet counted by the owner."""

    def remember(self, key: tuple, session, now: float) -> list:
        """A first fragment was translated: return the fragments that were waiting for it."""
        self.known[key] = (session, now + self.timeout)
        self.known.move_to_end(key)
        if len(self.known) > self.max_datagrams * 16:
            self.known.popitem(last=False)
        waiting = self.held.pop(key, None)
        return waiting[0] if waiting else []

    def lookup(self, key: tuple, now: float):
        entry = self.known.get(key)
        if entry is None or entry[1] < now or entry[0].closed:
            return None
        return entry[0]

    def hold(self, key: tuple, frame: bytearray, now: float) -> bool:
        entry = self.held.get(key)
        if entry is None:
            if len(self.held) >= self.max_datagrams:
                _, (frames, _) = self.held.popitem(last=False)
                self.dropped += len(frames)
            entry = self.held[key] = ([], now + self.timeout)
        if len(entry[0]) >= MAX_HELD_PER_DATAGRAM:
            return False
        entry[0].append(frame)
        return True

    def expire(self, now: float) -> None:
        for table in (self.known, self.held):
            for key in [k for k, (_, expiry) in table.items() if expiry < now]:
                value = table.pop(key)
                if table is self.held:
                    self.dropped += len(value[0])

    def next_deadline(self) -> float | None:
        deadlines = [e for _, e in self.held.values()] + [e for _, e in self.known.values()]
        return min(deadlines) if deadlines else None
