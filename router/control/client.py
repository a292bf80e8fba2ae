"""A blocking client of the control socket, for ``vpnrouter ctl`` and tests."""

from __future__ import annotations

import itertools
import socket
from typing import Iterator

from . import protocol, schema


class ControlError(Exception):
    """The router answered with an error, or could not be reached."""


class Client:
    def __init__(self, path: str, timeout: float = 5.0):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except FileNotFoundError:
            raise ControlError(f"no control socket at {path}: is the router running?") from None
        except OSError as exc:
            raise ControlError(f"cannot connect to {path}: {exc.strerror or exc}") from None
        self.unpacker = protocol.unpacker(protocol.MAX_ANSWER)
        self.ids = itertools.count(1)
        self.pending_notifications: list = []

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def call(self, method: str, *params):
        msgid = next(self.ids)
        self.sock.sendall(protocol.request(msgid, method, list(params)))
        for message in self._messages():
            if message[0] == protocol.NOTIFICATION:
                self.pending_notifications.append(message)
                continue
            if message[0] == protocol.RESPONSE and message[1] in (msgid, 0):
                _, _, error, result = message
                if error:
                    raise ControlError(f"{error.get('code')}: {error.get('message')}")
                return result
        raise ControlError("the router closed the connection")

    def events(self, subscribe: bool = True) -> Iterator[dict]:
        """Subscribe and yield events as they come (blocks; the timeout applies between events)."""
        if subscribe:
            self.call("subscribe")
        for method, params in self.notifications():
            if method == schema.NOTIFY_EVENT:
                yield params[0]

    def notifications(self) -> Iterator[tuple[str, list]]:
        """(method, params) of each notification; raises ControlError if the router drops this client."""
        while True:
            if self.pending_notifications:
                message = self.pending_notifications.pop(0)
            else:
                message = next((m for m in self._messages() if m[0] == protocol.NOTIFICATION), None)
                if message is None:
                    raise ControlError("the router closed the connection")
            _, method, params = message
            if method == schema.NOTIFY_DROPPED:
                raise ControlError(f"the router dropped this client: {params[0].get('reason')}")
            yield method, params

    def capture(self, session_id: int, count: int, seconds: float) -> Iterator[tuple[float, bytes]]:
        """(time, Ethernet frame) of each frame the router copies from a session, until the capture ends."""
        cid = self.call("capture", session_id, count, seconds)["capture"]
        for method, params in self.notifications():
            if method == schema.NOTIFY_CAPTURE and params[0] == cid:
                yield params[1], params[2]
            elif method == schema.NOTIFY_CAPTURE_END and params[0] == cid:
                return

    def follow(self) -> Iterator[tuple[str, object]]:
        """("snapshot", sessions) then ("event", event) for each event; a new snapshot after any gap in seq.

        Subscribing before reading the table means no change is missed: events
        older than the snapshot's subscription seq are skipped.
        """
        while True:
            expected = self.call("subscribe")["seq"]
            yield "snapshot", self.call("sessions")
            for event in self.events(subscribe=False):
                seq = event.get("seq", expected)
                if seq < expected:
                    continue
                if seq > expected:
                    yield "gap", {"expected": expected, "got": seq}
                    break
                expected = seq + 1
                yield "event", event

    def _messages(self):
        while True:
            for message in self.unpacker:
                yield message
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                raise ControlError("the router did not answer in time") from None
            if not data:
                return
            self.unpacker.feed(data)
