"""The control socket server (asyncio).  It answers requests from the router's state and streams events.

Nothing a client does may stall forwarding for long: the session table is
converted and written a chunk at a time with a yield to the event loop in
between (``sessions``), ``sessions_updated`` is computed the same way on a
timer, and a subscriber that stops reading is told why and dropped instead
of buffering without bound.  Writes to one connection are serialised by a
lock, so an event never lands inside a chunked answer.

A client that sends garbage gets an error response where a msgid can be
read, and is disconnected otherwise; a message over ``MAX_MESSAGE`` bytes
ends the connection, and so does a message left unfinished for
``PARTIAL_TIMEOUT`` seconds.  At most ``max_clients`` connections are served
at once; more are answered ``busy`` and closed.

The socket is the owner's alone (mode 0600), or its group's (``[control]
group``).  Each connection's peer is read from the kernel (SO_PEERCRED), and
every change a client makes is logged with its uid, user name and pid.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import pwd
import socket
import struct
from pathlib import Path

import msgpack

from ..behaviour import PROFILES
from ..dataplane.events import event_to_dict
from ..logs import Throttle
from ..recognise import descriptions
from ..version import interpreter, package_version
from . import protocol, schema
from .capture import Capture

log = logging.getLogger("vpnrouter.control")
QUEUE_LIMIT = 10000
"""Messages buffered per subscriber; one that falls further behind is told why and disconnected."""
CHUNK = 64
"""Sessions converted between two yields to the event loop (about a millisecond of work, a few on a busy
machine)."""
UPDATE_INTERVAL = 0.5
"""Seconds between two ``sessions_updated`` events (at most two a second)."""
MAX_CAPTURE_FRAMES = 100_000
MAX_CAPTURE_SECONDS = 3600.0
MAX_CLIENTS = 256
PARTIAL_TIMEOUT = 10.0
"""Seconds a client may leave a message unfinished before it is disconnected."""
READ_TIMEOUT = 30.0
"""Seconds a client may leave the router's answers unread (its socket full) before it is disconnected."""
CHANGES = frozenset({"set_passthrough", "set_profile", "add_rule", "del_rule", "close_session", "capture",
                     "set_ipv6_switch"})
"""Methods that change the router: logged with the peer's credentials."""
PEERCRED = struct.Struct("3i")


class Connection:
    """One client: its writer, the lock that keeps messages whole, and its subscription and captures."""

    def __init__(self, writer: asyncio.StreamWriter):
        self.writer = writer
        self.peer = peer_of(writer)
        """Who is at the other end, as the kernel says: "uid 0 (root), pid 1234"."""
        self.task = asyncio.current_task()
        self.lock = asyncio.Lock()
        self.queue: asyncio.Queue | None = None
        self.pump: asyncio.Task | None = None
        self.captures: dict[int, "Capture"] = {}

    def send(self, data: bytes) -> None:
        """Queue a notification for this client (its pump writes it between answers)."""
        if self.queue is not None:
            self.queue.put_nowait(data)


class ControlServer:
    def __init__(self, router, clock, path: str, mode: int = 0o600, on_change=None, group: int | None = None,
                 max_clients: int = MAX_CLIENTS, partial_timeout: float = PARTIAL_TIMEOUT, about: dict | None = None):
        self.router = router
        self.about = about or {}
        """Added to ``status``: what the process knows beyond the data plane (``python``, ``state``)."""
        self.clock = clock
        self.path = path
        self.mode = mode
        self.group = group
        self.max_clients = max_clients
        self.partial_timeout = partial_timeout
        self.clients: set[Connection] = set()
        self.warnings = Throttle(log)
        self.on_change = on_change or (lambda: None)
        """Called after a request changed the router, so that its events go out at once."""
        self.server: asyncio.AbstractServer | None = None
        self.subscribers: set[Connection] = set()
        self.seq = 0
        """The seq of the next event."""
        self._capture_ids = itertools.count(1)
        self._updates: asyncio.Task | None = None
        self._last_brief: dict[int, tuple] = {}

    async def start(self) -> None:
        path = Path(self.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() or path.is_symlink():
            if _socket_alive(self.path):
                raise OSError(f"another router is already listening on {self.path}")
            path.unlink()
        old_umask = os.umask(0o177)
        try:
            self.server = await asyncio.start_unix_server(self._client, path=self.path,
                                                          backlog=max(100, self.max_clients))
        finally:
            os.umask(old_umask)
        if self.group is not None:
            os.chown(self.path, -1, self.group)
        os.chmod(self.path, self.mode)
        self._updates = asyncio.ensure_future(self._update_loop())

    async def close(self) -> None:
        if self._updates is not None:
            self._updates.cancel()
        if self.server is not None:
            self.server.close()
            for conn in list(self.subscribers):
                conn.send(None)
            tasks = [conn.task for conn in self.clients if conn.task is not None]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=1.0)
            try:
                await asyncio.wait_for(self.server.wait_closed(), 1.0)
            except (asyncio.TimeoutError, Exception):
                pass
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    # -- events -----------------------------------------------------------------------------------

    def publish(self, event) -> None:
        """An event from the data plane: numbered, and sent to every subscriber."""
        seq, self.seq = self.seq, self.seq + 1
        if self.subscribers:
            data = event_to_dict(event)
            data["seq"] = seq
            self._broadcast(data)

    def _broadcast(self, data: dict) -> None:
        message = protocol.notification(schema.NOTIFY_EVENT, [data])
        for conn in list(self.subscribers):
            if conn.queue.qsize() >= QUEUE_LIMIT:
                self._drop_subscriber(conn, f"fell behind: {QUEUE_LIMIT} messages unread", data["seq"] - 1)
            else:
                conn.queue.put_nowait(message)

    def _drop_subscriber(self, conn: Connection, reason: str, seq: int) -> None:
        """Tell a subscriber why it is dropped (ahead of what it has not read), then disconnect it."""
        self.warnings.warning("dropped", "control subscriber %s dropped: %s", conn.peer, reason)
        self.subscribers.discard(conn)
        while not conn.queue.empty():
            conn.queue.get_nowait()
        conn.queue.put_nowait(protocol.notification(schema.NOTIFY_DROPPED, [{"reason": reason, "seq": seq}]))
        conn.queue.put_nowait(None)

    async def _update_loop(self) -> None:
        """Every UPDATE_INTERVAL, a ``sessions_updated`` event with the sessions whose counters or state changed."""
        while True:
            await asyncio.sleep(UPDATE_INTERVAL)
            if not self.subscribers:
                self._last_brief.clear()
                continue
            now = self.clock()
            refs = self.router.session_refs()
            last, changed, current = self._last_brief, [], {}
            for i in range(0, len(refs), CHUNK):
                for obj in refs[i:i + CHUNK]:
                    brief = self.router.brief(obj, now)
                    current[obj.id] = brief
                    old = last.get(obj.id)
                    if old is None or old[1] != brief[1] or old[3:] != brief[3:]:
                        changed.append(dict(zip(schema.UPDATE_FIELDS, brief)))
                await asyncio.sleep(0)
            self._last_brief = current
            if changed and self.subscribers:
                seq, self.seq = self.seq, self.seq + 1
                self._broadcast({"type": "sessions_updated", "time": now, "seq": seq, "sessions": changed})

    # -- connections ------------------------------------------------------------------------------

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self.clients) >= self.max_clients:
            return await self._refuse(writer)
        unpacker = protocol.unpacker()
        conn = Connection(writer)
        self.clients.add(conn)
        received = complete = 0      # bytes read, and of those, bytes of whole messages
        try:
            while True:
                unfinished = received > complete
                try:
                    data = await asyncio.wait_for(reader.read(65536), self.partial_timeout if unfinished else None)
                except asyncio.TimeoutError:
                    self.warnings.warning("unfinished", "control client %s left a message unfinished for %g s; "
                                          "disconnected", conn.peer, self.partial_timeout)
                    break
                if not data:
                    break
                try:
                    unpacker.feed(data)
                except msgpack.BufferFull:
                    self.warnings.warning("oversized", "control client %s sent an oversized message; disconnected",
                                          conn.peer)
                    break
                received += len(data)
                try:
                    for message in unpacker:
                        complete = unpacker.tell()
                        await self._handle(message, conn)
                except (protocol.ProtocolError, ValueError, TypeError, msgpack.UnpackException) as exc:
                    # TypeError: msgpack refuses an unhashable map key (a map or an array as a key) with one
                    async with conn.lock:
                        writer.write(protocol.response(0, protocol.error("bad_request", str(exc)), None))
                        await drained(writer)
                    break
        except asyncio.TimeoutError:
            self.warnings.warning("unread", "control client %s left its answers unread for %g s; disconnected",
                                  conn.peer, READ_TIMEOUT)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self.clients.discard(conn)
            self.subscribers.discard(conn)
            for capture in list(conn.captures.values()):
                capture.end("closed")
            if conn.pump is not None:
                conn.pump.cancel()
            writer.close()

    async def _refuse(self, writer: asyncio.StreamWriter) -> None:
        """Over ``max_clients``: say so and close."""
        self.warnings.warning("busy", "control socket: a connection refused: %d clients already "
                              "(control.max_clients)", self.max_clients)
        try:
            writer.write(protocol.response(0, protocol.error(
                "busy", f"the router serves {self.max_clients} control clients at most"), None))
            await drained(writer)
        except (ConnectionError, asyncio.TimeoutError):
            pass
        writer.close()

    async def _handle(self, message, conn: Connection) -> None:
        msgid, method, params = protocol.parse_request(message)
        if method == "sessions":
            return await self._sessions(msgid, conn)
        handler = HANDLERS.get(method)
        if handler is None:
            reply = protocol.response(msgid, protocol.error("unknown_method", f"no method {method!r}"), None)
        else:
            try:
                reply = protocol.response(msgid, None, handler(self, params, conn))
                if method in CHANGES:
                    log.info("control: %s %s by %s", method, _brief(params), conn.peer)
            except LookupError as exc:
                reply = protocol.response(msgid, protocol.error("not_found", str(exc.args[0])), None)
            except ValueError as exc:
                reply = protocol.response(msgid, protocol.error("bad_params", str(exc)), None)
        async with conn.lock:
            conn.writer.write(reply)
            await drained(conn.writer)

    async def _sessions(self, msgid: int, conn: Connection) -> None:
        """The whole table as one array, converted and written a chunk at a time."""
        now = self.clock()
        refs = self.router.session_refs()
        info_of, writer = self.router.info_of, conn.writer
        async with conn.lock:
            writer.write(protocol.array_response_head(msgid, len(refs)))
            for i in range(0, len(refs), CHUNK):
                writer.write(protocol.pack_items(info_of(ref, now).to_dict() for ref in refs[i:i + CHUNK]))
                await asyncio.sleep(0)      # let the TAPs be read between chunks
                if writer.transport.get_write_buffer_size() > 1 << 22:
                    await drained(writer)
            await drained(writer)

    # -- the methods ------------------------------------------------------------------------------

    def _version(self, params, conn):
        return {"protocol": schema.PROTOCOL_VERSION, "router": package_version(), "python": interpreter()["version"],
                "helpers": [helper.description() for helper in self.router.helpers],
                "recognisers": descriptions(getattr(self.router, "recognisers", {}).values())}

    def _status(self, params, conn):
        status = self.router.status(self.clock())
        status["protocol"] = schema.PROTOCOL_VERSION
        status.update(self.about)
        return status

    def _set_passthrough(self, params, conn):
        names = _either(self.router.switches)
        if len(params) != 2 or not isinstance(params[0], str) or not (
                isinstance(params[1], bool) or params[1] in ("on", *schema.PASSTHROUGH_MODES)):
            raise ValueError(f"params: [name, value] with name {names} and value a boolean or "
                             "\"on\", \"off\", \"single\" or \"multi\"")
        if params[0] not in self.router.switches:
            raise ValueError(f"unknown passthrough {params[0]!r}: {names}")
        self.router.set_passthrough(params[0], params[1], self.clock())
        self.on_change()
        return dict(self.router.switches)

    def _set_ipv6_switch(self, params, conn):
        switches = self.router.status(self.clock())["wan"].get("ipv6_switches") or {}
        if len(params) != 2 or not isinstance(params[0], str) or not isinstance(params[1], bool):
            raise ValueError(f"params: [name, on] with name {_either(switches) if switches else 'a switch'} and "
                             "on a boolean")
        if not hasattr(self.router, "set_ipv6_switch"):
            raise ValueError("the router's WAN is IPv4: it forwards no IPv6 (wan.mode = \"map-e\" or \"ds-lite\")")
        try:
            result = self.router.set_ipv6_switch(params[0], params[1], self.clock())
        except LookupError as exc:
            raise ValueError(str(exc)) from None
        self.on_change()
        return result

    def _set_profile(self, params, conn):
        if len(params) != 1 or not isinstance(params[0], str):
            raise ValueError(f"params: [name] with name one of {', '.join(PROFILES)}")
        nat = self.router.set_profile(params[0], self.clock())
        self.on_change()
        return nat

    def _rules(self, params, conn):
        return self.router.admission.view()

    def _add_rule(self, params, conn):
        if len(params) not in (1, 2) or not isinstance(params[0], dict) or (
                len(params) == 2 and not (isinstance(params[1], int) and not isinstance(params[1], bool))):
            raise ValueError("params: [{vpn, client, server, action}, position?] with position from 1")
        view = self.router.add_rule(params[0], params[1] if len(params) == 2 else None, self.clock())
        self.on_change()
        return view

    def _del_rule(self, params, conn):
        if len(params) != 1 or not isinstance(params[0], int) or isinstance(params[0], bool):
            raise ValueError("params: [index] with the rule's index, as `ctl rules` shows it")
        view = self.router.delete_rule(params[0], self.clock())
        self.on_change()
        return view

    def _subscribe(self, params, conn):
        if conn.queue is None:
            conn.queue = asyncio.Queue()
            conn.pump = asyncio.ensure_future(_pump(conn))
        self.subscribers.add(conn)
        return {"seq": self.seq, "protocol": schema.PROTOCOL_VERSION}

    def _unsubscribe(self, params, conn):
        self.subscribers.discard(conn)
        return True

    def _close_session(self, params, conn):
        session_id = _session_id(params, 1)
        if not self.router.close_session(session_id, self.clock()):
            raise LookupError(f"no session or flow with id {session_id}")
        self.on_change()
        return True

    def _capture(self, params, conn):
        if len(params) != 3 or not all(isinstance(p, (int, float)) and not isinstance(p, bool) for p in params):
            raise ValueError("params: [id, count, seconds]")
        session_id, count, seconds = _session_id(params[:1], 1), params[1], float(params[2])
        if not 1 <= count <= MAX_CAPTURE_FRAMES or not 0 < seconds <= MAX_CAPTURE_SECONDS:   # NaN and inf too
            raise ValueError(f"count from 1 to {MAX_CAPTURE_FRAMES}, seconds up to {MAX_CAPTURE_SECONDS:.0f}")
        capture = Capture(next(self._capture_ids), self.router, conn, int(count))
        capture.target = self.router.start_capture(session_id, capture)
        if conn.queue is None:      # captured frames travel like events, through the connection's pump
            conn.queue = asyncio.Queue()
            conn.pump = asyncio.ensure_future(_pump(conn))
        conn.captures[capture.id] = capture
        capture.timer = asyncio.get_running_loop().call_later(seconds, capture.end, "seconds")
        return {"capture": capture.id}


HANDLERS = {
    "version": ControlServer._version,
    "status": ControlServer._status,
    "set_passthrough": ControlServer._set_passthrough,
    "subscribe": ControlServer._subscribe,
    "unsubscribe": ControlServer._unsubscribe,
    "close_session": ControlServer._close_session,
    "capture": ControlServer._capture,
    "set_profile": ControlServer._set_profile,
    "set_ipv6_switch": ControlServer._set_ipv6_switch,
    "rules": ControlServer._rules,
    "add_rule": ControlServer._add_rule,
    "del_rule": ControlServer._del_rule,
}
"""RPC methods to handlers (``sessions`` is streamed, so it is handled apart)."""


def _either(names) -> str:
    """"a, b or c": the names in words."""
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _session_id(params, count: int) -> int:
    if len(params) != count or not isinstance(params[0], int) or isinstance(params[0], bool):
        raise ValueError("params: [id] with the session's id, as `ctl sessions` shows it")
    return params[0]


async def _pump(conn: Connection) -> None:
    """Write queued notifications to the client, between answers."""
    try:
        while True:
            data = await conn.queue.get()
            if data is None:
                conn.writer.close()
                return
            async with conn.lock:
                conn.writer.write(data)
                await drained(conn.writer)
    except (ConnectionError, asyncio.CancelledError, asyncio.TimeoutError):
        conn.writer.close()


async def drained(writer: asyncio.StreamWriter) -> None:
    """``writer.drain()``, but a client that reads nothing for READ_TIMEOUT seconds raises TimeoutError."""
    await asyncio.wait_for(writer.drain(), READ_TIMEOUT)


def peer_of(writer: asyncio.StreamWriter) -> str:
    """The connecting process as the kernel reports it (SO_PEERCRED): uid, user name and pid."""
    sock = writer.get_extra_info("socket")
    try:
        pid, uid, _ = PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, PEERCRED.size))
    except (AttributeError, OSError):
        return "an unknown peer"
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = "?"
    return f"uid {uid} ({name}), pid {pid}"


def _brief(params) -> str:
    """A request's params for the log: one line, not too long."""
    text = repr(params)
    return text if len(text) <= 200 else text[:197] + "..."


def _socket_alive(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()
