"""The control socket's reading side, fuzzed in process: bytes in, answers out, no socket.

``answer(data)`` runs the server's own connection handler over a stream
that holds ``data`` and then ends, with a writer that keeps what the server
writes, on a router from ``frames.make_router``.  It returns the messages
the server wrote.  An exception escaping the handler is a crash; so is an
answer that is not ``[1, msgid, error, result]`` (or a notification), an
error that is not ``{"code", "message"}``, and a complete request that gets
no answer at all.
"""

from __future__ import annotations

import asyncio

from tests.unit.frames import make_router
from router.control import protocol
from router.control.server import ControlServer

CODES = {"bad_request", "unknown_method", "bad_params", "not_found"}


class Writer:
    """What the server needs of an ``asyncio.StreamWriter``; keeps the bytes written."""

    def __init__(self):
        self.data = bytearray()
        self.transport = self
        self.closed = False

    def write(self, data: bytes) -> None:
        self.data += data

    async def drain(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name, default=None):
        return default

    def get_write_buffer_size(self) -> int:
        return 0


def answer(data: bytes, router=None) -> list:
    """The messages the server writes in answer to the byte stream ``data``."""
    return asyncio.run(_serve(data, router or make_router()))


async def _serve(data: bytes, router) -> list:
    server = ControlServer(router, lambda: 5.0, "/nonexistent/vpnrouter-fuzz.sock")
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    writer = Writer()
    await server._client(reader, writer)
    return _unpack(bytes(writer.data))


def _unpack(data: bytes) -> list:
    unpacker = protocol.unpacker(protocol.MAX_ANSWER)
    unpacker.feed(data)
    return list(unpacker)


def check(data: bytes, router=None) -> list:
    """``answer``, and every answer well formed; a stream holding a complete message gets at least one."""
    replies = answer(data, router)
    for reply in replies:
        assert isinstance(reply, list) and reply and reply[0] in (protocol.RESPONSE, protocol.NOTIFICATION), reply
        if reply[0] == protocol.RESPONSE:
            assert len(reply) == 4 and isinstance(reply[1], int), reply
            error = reply[2]
            assert error is None or (set(error) == {"code", "message"} and error["code"] in CODES), error
    if _complete_messages(data):
        assert any(reply[0] == protocol.RESPONSE for reply in replies), "a complete request got no answer"
    return replies


def _complete_messages(data: bytes) -> int:
    unpacker = protocol.unpacker()
    try:
        unpacker.feed(data)
        return sum(1 for _ in unpacker)
    except Exception:       # noqa: BLE001 - what the server's own unpacker refuses ends with bad_request
        return 1 if data else 0
