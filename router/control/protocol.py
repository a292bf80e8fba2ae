"""The control socket's wire protocol: MessagePack-RPC over a Unix stream socket.

    request       [0, msgid, method, params]
    response      [1, msgid, error, result]     error is None or {"code": str, "message": str}
    notification  [2, method, params]

Methods: ``status``, ``sessions``, ``set_passthrough`` (params [name, on]),
``subscribe`` and ``unsubscribe``.  A subscribed client receives
``[2, "event", [event]]`` for each event (see ``router.dataplane.events``).
Pure: no sockets here, only encoding, decoding and validation.
"""

from __future__ import annotations

import msgpack

REQUEST, RESPONSE, NOTIFICATION = 0, 1, 2
MAX_MESSAGE = 1 << 20
"""Largest message either side accepts; a larger one ends the connection."""
METHODS = ("status", "sessions", "set_passthrough", "subscribe", "unsubscribe")


class ProtocolError(Exception):
    """The peer sent something that is not a valid message; the connection should end."""


def unpacker() -> msgpack.Unpacker:
    return msgpack.Unpacker(max_buffer_size=MAX_MESSAGE, raw=False, strict_map_key=False)


def request(msgid: int, method: str, params: list) -> bytes:
    return msgpack.packb([REQUEST, msgid, method, params])


def response(msgid: int, error: dict | None, result) -> bytes:
    return msgpack.packb([RESPONSE, msgid, error, result])


def notification(method: str, params: list) -> bytes:
    return msgpack.packb([NOTIFICATION, method, params])


def error(code: str, message: str) -> dict:
    return {"code": code, "message": message}


def parse_request(message) -> tuple[int, str, list]:
    """Validate a request; raise ProtocolError if it is not one."""
    if not isinstance(message, list) or len(message) != 4 or message[0] != REQUEST:
        raise ProtocolError("expected [0, msgid, method, params]")
    _, msgid, method, params = message
    if not isinstance(msgid, int) or isinstance(msgid, bool) or not 0 <= msgid < 2 ** 32:
        raise ProtocolError("msgid must be an unsigned 32-bit integer")
    if not isinstance(method, str) or not isinstance(params, list):
        raise ProtocolError("method must be a string and params an array")
    return msgid, method, params
