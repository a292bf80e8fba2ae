"""The control socket's wire protocol: MessagePack-RPC over a Unix stream socket.

    request       [0, msgid, method, params]
    response      [1, msgid, error, result]     error is None or {"code": str, "message": str}
    notification  [2, method, params]

Methods: ``version``, ``status``, ``sessions``, ``set_passthrough`` (params
[name, on | "on" | "off" | "single" | "multi"]), ``subscribe`` (answers {"seq": the next event's seq,
"protocol"}), ``unsubscribe``, ``close_session`` [id], ``capture`` [id, count, seconds], ``set_profile``
[name], ``rules``, ``add_rule`` [rule, position?] and ``del_rule`` [index] (see ``schema``).
A subscribed client receives ``[2, "event", [event]]`` for each event, each
with a consecutive ``seq``; ``sessions_updated`` events carry the counters of
the sessions that changed.  ``router.control.schema`` names the fields.

A large answer (the session table) is written as one MessagePack array whose
items are packed in chunks (``array_response_head`` then the packed items), so
the router keeps forwarding between chunks and the client reads one message.
Pure: no sockets here, only encoding, decoding and validation.
"""

from __future__ import annotations

import msgpack

REQUEST, RESPONSE, NOTIFICATION = 0, 1, 2
MAX_MESSAGE = 1 << 20
"""Largest request the router accepts; a larger one ends the connection."""
MAX_ANSWER = 1 << 30
"""Largest message a client accepts (a session table of a million sessions fits)."""
METHODS = ("version", "status", "sessions", "set_passthrough", "subscribe", "unsubscribe", "close_session",
           "capture", "set_profile", "rules", "add_rule", "del_rule")


class ProtocolError(Exception):
    """The peer sent something that is not a valid message; the connection should end."""


def unpacker(max_size: int = MAX_MESSAGE) -> msgpack.Unpacker:
    return msgpack.Unpacker(max_buffer_size=max_size, raw=False, strict_map_key=False)


def array_response_head(msgid: int, count: int) -> bytes:
    """The start of a response whose result is an array of ``count`` items, packed and sent after it."""
    head = bytearray(b"\x94")                       # fixarray of 4: [1, msgid, None, result]
    head += msgpack.packb(RESPONSE) + msgpack.packb(msgid) + msgpack.packb(None)
    head += b"\xdd" + count.to_bytes(4, "big")     # array 32
    return bytes(head)


def pack_items(items) -> bytes:
    packer = msgpack.Packer()
    return b"".join(packer.pack(item) for item in items)


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
