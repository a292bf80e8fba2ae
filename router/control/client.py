"""A blocking client of the control socket, for ``vpnrouter ctl`` and tests."""

from __future__ import annotations

import itertools
import socket
from typing import Iterator

from . import protocol


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
        self.unpacker = protocol.unpacker()
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

    def events(self) -> Iterator[dict]:
        """Subscribe and yield events as they come (blocks; the timeout applies between events)."""
        self.call("subscribe")
        while self.pending_notifications:
            yield self.pending_notifications.pop(0)[2][0]
        for message in self._messages():
            if message[0] == protocol.NOTIFICATION and message[1] == "event":
                yield message[2][0]

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
