"""``capture``: copies of one session's frames, streamed to the client that asked.

The router hands each frame the session forwards to a ``Capture`` (a callable
it holds through ``Router.start_capture``); the capture queues it on its
client's connection as a notification and ends after ``count`` frames, after
its time, or when the client goes.
"""

from __future__ import annotations

import asyncio
import time

from . import protocol, schema


class Capture:
    """Copies of one session's frames, streamed to the client that asked (``capture``)."""

    def __init__(self, cid: int, router, conn, count: int):
        self.id, self.router, self.conn, self.count = cid, router, conn, count
        self.target = None
        """The session or flow captured (``Router.start_capture``)."""
        self.sent = 0
        self.timer: asyncio.TimerHandle | None = None

    def __call__(self, frame: bytearray) -> None:
        self.conn.send(protocol.notification(schema.NOTIFY_CAPTURE, [self.id, time.time(), bytes(frame[12:])]))
        self.sent += 1
        if self.sent >= self.count:
            self.end("count")

    def end(self, reason: str) -> None:
        self.router.stop_capture(self.target, self)
        if self.timer is not None:
            self.timer.cancel()
        if self.conn.captures.pop(self.id, None) is not None:
            self.conn.send(protocol.notification(schema.NOTIFY_CAPTURE_END, [self.id, reason, self.sent]))
