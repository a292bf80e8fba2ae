"""The control socket server (asyncio).  It answers requests from the router's state and streams events.

A client that sends garbage gets an error response where a msgid can be
read, and is disconnected otherwise; a message over ``MAX_MESSAGE`` bytes
ends the connection.  Nothing a client does stops the forwarding.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from pathlib import Path

import msgpack

from ..dataplane.events import event_to_dict
from . import protocol

log = logging.getLogger("vpnrouter.control")
QUEUE_LIMIT = 10000
"""Events buffered per subscriber; a subscriber that falls further behind is disconnected."""


class ControlServer:
    def __init__(self, router, clock, path: str, mode: int = 0o600):
        self.router = router
        self.clock = clock
        self.path = path
        self.mode = mode
        self.server: asyncio.AbstractServer | None = None
        self.subscribers: set[asyncio.Queue] = set()

    async def start(self) -> None:
        path = Path(self.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() or path.is_symlink():
            if _socket_alive(self.path):
                raise OSError(f"another router is already listening on {self.path}")
            path.unlink()
        old_umask = os.umask(0o177)
        try:
            self.server = await asyncio.start_unix_server(self._client, path=self.path)
        finally:
            os.umask(old_umask)
        os.chmod(self.path, self.mode)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            for queue in list(self.subscribers):
                queue.put_nowait(None)
            try:
                await asyncio.wait_for(self.server.wait_closed(), 1.0)
            except (asyncio.TimeoutError, Exception):
                pass
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def publish(self, event) -> None:
        if not self.subscribers:
            return
        data = protocol.notification("event", [event_to_dict(event)])
        for queue in list(self.subscribers):
            if queue.qsize() >= QUEUE_LIMIT:
                self.subscribers.discard(queue)
                queue.put_nowait(None)
            else:
                queue.put_nowait(data)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        unpacker = protocol.unpacker()
        queue: asyncio.Queue | None = None
        pump: asyncio.Task | None = None
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                try:
                    unpacker.feed(data)
                except msgpack.BufferFull:
                    log.warning("control client sent an oversized message; disconnected")
                    break
                try:
                    for message in unpacker:
                        reply, queue, pump = self._handle(message, queue, pump, writer)
                        writer.write(reply)
                except (protocol.ProtocolError, ValueError, msgpack.UnpackException) as exc:
                    writer.write(protocol.response(0, protocol.error("bad_request", str(exc)), None))
                    await writer.drain()
                    break
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if queue is not None:
                self.subscribers.discard(queue)
            if pump is not None:
                pump.cancel()
            writer.close()

    def _handle(self, message, queue, pump, writer):
        msgid, method, params = protocol.parse_request(message)
        now = self.clock()
        try:
            if method == "status":
                result = self.router.status(now)
            elif method == "sessions":
                result = [s.to_dict() for s in self.router.session_infos(now)]
            elif method == "set_passthrough":
                if len(params) != 2 or not isinstance(params[0], str) or not isinstance(params[1], bool):
                    raise ValueError("params: [name, on] with name pptp, l2tp or ipsec and on a boolean")
                if params[0] not in self.router.switches:
                    raise ValueError(f"unknown passthrough {params[0]!r}: pptp, l2tp or ipsec")
                self.router.set_passthrough(params[0], params[1], now)
                result = dict(self.router.switches)
            elif method == "subscribe":
                if queue is None:
                    queue = asyncio.Queue()
                    self.subscribers.add(queue)
                    pump = asyncio.ensure_future(_pump(queue, writer))
                result = True
            elif method == "unsubscribe":
                if queue is not None:
                    self.subscribers.discard(queue)
                    pump.cancel()
                    queue = pump = None
                result = True
            else:
                return protocol.response(msgid, protocol.error("unknown_method", f"no method {method!r}"),
                                         None), queue, pump
        except ValueError as exc:
            return protocol.response(msgid, protocol.error("bad_params", str(exc)), None), queue, pump
        return protocol.response(msgid, None, result), queue, pump


async def _pump(queue: asyncio.Queue, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await queue.get()
            if data is None:
                writer.close()
                return
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass


def _socket_alive(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()
