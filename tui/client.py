"""An asyncio client of the control socket, for the dashboard: requests by id, notifications, reconnection.

``Connection`` is one socket: ``request()`` sends ``[0, msgid, method, params]``
and waits for the answer with that msgid; event notifications are handed on in
batches, one per read.  Order matters and is kept: a request made with
``then=`` has ``then(result)`` run by the reader at the answer's place in the
stream, after the events read before it and before those read after it.  The
snapshot (``sessions``) and the subscription's seq travel this way, so the
model sees events and snapshot in the order the router wrote them.

``Link`` keeps a connection up: connect, ask ``version`` (and hand on the
router's protocols, ``Described``), subscribe, read the table, read
``status`` every ``status_interval`` seconds, read the table again when asked
(``resync``), and when the router goes away, say so and connect again, for ever.
It tells the dashboard what happens through ``emit(item)`` with the items below;
it imports no Textual.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from typing import Callable

from router.control import protocol, schema

READ_SIZE = 1 << 20
REQUEST_TIMEOUT = 10.0
SNAPSHOT_TIMEOUT = 120.0
"""A table of a million sessions is read in well under this."""
RETRY_FIRST, RETRY_MAX = 0.25, 2.0
"""Seconds between two attempts to connect: doubling from the first to the largest."""


class RequestError(Exception):
    """The router answered with an error, or could not be asked."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{message} ({code})")
        self.code, self.message = code, message


# -- what the link tells the dashboard --------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class LinkUp:
    path: str


@dataclass(frozen=True, slots=True)
class LinkDown:
    reason: str


@dataclass(frozen=True, slots=True)
class Described:
    """The router's VPN protocols, as ``version()["helpers"]`` describes them, at every connection; None from a
    router that sends none (older than the dashboard)."""
    helpers: list | None
    recognisers: list | None = None
    """``version()["recognisers"]``: the protocols it recognises without a helper; None from a router older
    than them."""


@dataclass(frozen=True, slots=True)
class Subscribed:
    seq: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    sessions: list


@dataclass(frozen=True, slots=True)
class Events:
    events: list


@dataclass(frozen=True, slots=True)
class Status:
    status: dict


@dataclass(frozen=True, slots=True)
class Dropped:
    """The router dropped this subscriber (it fell behind); it disconnects next."""
    reason: str


LinkItem = LinkUp | LinkDown | Described | Subscribed | Snapshot | Events | Status | Dropped


# -- one connection ---------------------------------------------------------------------------------

class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, emit: Callable[[object], None]):
        self.reader, self.writer, self.emit = reader, writer, emit
        self.ids = itertools.count(1)
        self.pending: dict[int, tuple[asyncio.Future, Callable | None]] = {}
        self.captures: dict[int, Callable[[str, list], None]] = {}
        """Capture id -> handler of its ``capture`` and ``capture_end`` notifications."""
        self._events: list = []
        self.closed: asyncio.Future = asyncio.get_running_loop().create_future()
        """Set to the reason when the connection ends."""
        self._reader_task = asyncio.ensure_future(self._read())

    @classmethod
    async def open(cls, path: str, emit: Callable[[object], None]) -> "Connection":
        reader, writer = await asyncio.open_unix_connection(path, limit=READ_SIZE)
        return cls(reader, writer, emit)

    def call(self, method: str, *params, then: Callable | None = None) -> asyncio.Future:
        """Send a request; the future gets the result or a RequestError.  ``then(result)`` runs in stream order."""
        future = asyncio.get_running_loop().create_future()
        if self.closed.done():
            future.set_exception(ConnectionError(self.closed.result()))
            return future
        msgid = next(self.ids)
        self.pending[msgid] = (future, then)
        self.writer.write(protocol.request(msgid, method, list(params)))
        return future

    async def request(self, method: str, *params, then: Callable | None = None,
                      timeout: float = REQUEST_TIMEOUT):
        return await asyncio.wait_for(self.call(method, *params, then=then), timeout)

    def close(self, reason: str = "closed") -> None:
        self._reader_task.cancel()
        self._finish(reason)

    async def _read(self) -> None:
        unpacker = protocol.unpacker(protocol.MAX_ANSWER)
        reason = "the router closed the connection"
        try:
            while True:
                data = await self.reader.read(READ_SIZE)
                if not data:
                    break
                unpacker.feed(data)
                for message in unpacker:
                    self._dispatch(message)
                self._flush()
        except asyncio.CancelledError:
            reason = "closed"
        except (ConnectionError, OSError) as exc:
            reason = f"connection lost: {exc}"
        except Exception as exc:            # a broken message: this connection cannot go on
            reason = f"bad message from the router: {exc}"
        self._flush()
        self._finish(reason)

    def _dispatch(self, message) -> None:
        if not isinstance(message, list) or not message:
            raise protocol.ProtocolError("not a message")
        if message[0] == protocol.RESPONSE and len(message) == 4:
            self._flush()
            _, msgid, error, result = message
            future, then = self.pending.pop(msgid, (None, None))
            if future is None or future.done():
                return
            if error:
                future.set_exception(RequestError(str(error.get("code")), str(error.get("message"))))
                return
            if then is not None:
                then(result)
            future.set_result(result)
        elif message[0] == protocol.NOTIFICATION and len(message) == 3:
            _, method, params = message
            if method == schema.NOTIFY_EVENT:
                self._events.append(params[0])
            elif method in (schema.NOTIFY_CAPTURE, schema.NOTIFY_CAPTURE_END):
                handler = self.captures.get(params[0])
                if handler is not None:
                    handler(method, params)
            elif method == schema.NOTIFY_DROPPED:
                self._flush()
                self.emit(Dropped(str((params[0] or {}).get("reason", "fell behind"))))

    def _flush(self) -> None:
        if self._events:
            events, self._events = self._events, []
            self.emit(Events(events))

    def _finish(self, reason: str) -> None:
        if self.closed.done():
            return
        self.closed.set_result(reason)
        for future, _ in self.pending.values():
            if not future.done():
                future.set_exception(ConnectionError(reason))
        self.pending.clear()
        for cid, handler in list(self.captures.items()):
            handler(schema.NOTIFY_CAPTURE_END, [cid, "closed", None])
        self.writer.close()


# -- the link that stays up -------------------------------------------------------------------------

class Link:
    def __init__(self, path: str, emit: Callable[[object], None], status_interval: float = 1.0):
        self.path, self.emit, self.status_interval = path, emit, status_interval
        self.conn: Connection | None = None
        self._resync = asyncio.Event()
        self._stopping = False

    def resync(self) -> None:
        """Read the table and the status again (after a gap in seq)."""
        self._resync.set()

    def stop(self) -> None:
        self._stopping = True
        if self.conn is not None:
            self.conn.close()

    async def run(self) -> None:
        """Connect, serve, reconnect: until ``stop()`` or cancellation.  Attempts that fail at once come
        ever less often (up to RETRY_MAX apart); after a connection that worked, the first retry is quick."""
        loop, delay = asyncio.get_running_loop(), RETRY_FIRST
        while not self._stopping:
            try:
                conn = await Connection.open(self.path, self.emit)
            except OSError as exc:
                self.emit(LinkDown(_describe(exc, self.path)))
            else:
                started = loop.time()
                reason = await self._serve_until_closed(conn)
                self.emit(LinkDown(reason))
                if loop.time() - started > RETRY_MAX:
                    delay = RETRY_FIRST
            if self._stopping:
                break
            await asyncio.sleep(delay)
            delay = min(RETRY_MAX, delay * 2)

    async def _serve_until_closed(self, conn: Connection) -> str:
        """Serve one connection; why it ended."""
        self.conn = conn
        self.emit(LinkUp(self.path))
        try:
            return await self._serve(conn)
        except RequestError as exc:
            return str(exc)
        except (ConnectionError, OSError) as exc:
            return str(exc) or type(exc).__name__
        except asyncio.TimeoutError:
            return "the router did not answer in time"
        finally:
            self.conn = None
            conn.close()

    async def _serve(self, conn: Connection) -> str:
        answer = await _check_version(conn)
        self.emit(Described(_list(answer, "helpers"), _list(answer, "recognisers")))
        await conn.request("subscribe", then=lambda r: self.emit(Subscribed(int(r["seq"]))))
        await self._snapshot(conn)
        while True:
            resync = asyncio.ensure_future(self._resync.wait())
            done, _ = await asyncio.wait({conn.closed, resync}, timeout=self.status_interval,
                                         return_when=asyncio.FIRST_COMPLETED)
            resync.cancel()
            if conn.closed.done():
                return conn.closed.result()
            if self._resync.is_set():
                self._resync.clear()
                await self._snapshot(conn)
            else:
                status = await conn.request("status")
                self.emit(Status(status))

    async def _snapshot(self, conn: Connection) -> None:
        self._resync.clear()
        await conn.request("sessions", then=lambda sessions: self.emit(Snapshot(sessions)), timeout=SNAPSHOT_TIMEOUT)
        self.emit(Status(await conn.request("status")))

    # -- requests from the dashboard -------------------------------------------------------------

    def _connection(self) -> Connection:
        if self.conn is None or self.conn.closed.done():
            raise RequestError("not_connected", f"not connected to the router at {self.path}")
        return self.conn

    async def call(self, method: str, *params, timeout: float = REQUEST_TIMEOUT):
        """One request; raises RequestError with the router's reason (or why it could not be asked)."""
        conn = self._connection()
        try:
            return await conn.request(method, *params, timeout=timeout)
        except ConnectionError as exc:
            raise RequestError("disconnected", str(exc)) from None
        except asyncio.TimeoutError:
            raise RequestError("timeout", f"no answer to {method} in {timeout:g} s") from None

    async def capture(self, session_id: int, count: int, seconds: float,
                      on_frame: Callable[[float, bytes], None]) -> tuple[str, int]:
        """Ask the router for copies of a session's frames; ``on_frame(time, frame)`` for each.

        Returns (why it ended: count, seconds or closed; frames received).
        """
        conn = self._connection()
        ended = asyncio.get_running_loop().create_future()
        received = 0

        def handle(method: str, params: list) -> None:
            nonlocal received
            if method == schema.NOTIFY_CAPTURE:
                received += 1
                on_frame(float(params[1]), bytes(params[2]))
            elif not ended.done():
                ended.set_result(str(params[1]))

        def register(result: dict) -> None:
            conn.captures[result["capture"]] = handle

        try:
            result = await conn.request("capture", session_id, count, seconds, then=register)
        except ConnectionError as exc:
            raise RequestError("disconnected", str(exc)) from None
        except asyncio.TimeoutError:
            raise RequestError("timeout", "no answer to capture") from None
        try:
            reason = await asyncio.wait_for(ended, seconds + REQUEST_TIMEOUT)
        except asyncio.TimeoutError:
            reason = "seconds"
        finally:
            conn.captures.pop(result["capture"], None)
        return reason, received


async def _check_version(conn: Connection) -> dict:
    """Control protocol 3 or later (modes, profiles, rules); an older router is named as such.  Its answer
    (``helpers``: its protocols as it describes them; ``recognisers``)."""
    try:
        answer = await conn.request("version")
    except RequestError as exc:
        if exc.code != "unknown_method":
            raise
        answer = {}
    protocol_version = answer.get("protocol", 1)
    if protocol_version < schema.PROTOCOL_VERSION:
        raise RequestError("old_router", f"the router speaks control protocol {protocol_version}; "
                                         f"the dashboard needs {schema.PROTOCOL_VERSION}")
    return answer


def _list(answer: dict, key: str) -> list | None:
    value = answer.get(key)
    return value if isinstance(value, list) else None


def _describe(exc: OSError, path: str) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"no socket at {path}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the router running?)"
    if isinstance(exc, PermissionError):
        return f"permission denied on {path}"
    return exc.strerror or str(exc)
