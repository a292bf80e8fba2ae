"""The control socket: MessagePack-RPC requests, errors, events; robust against bad clients."""

import asyncio
import contextlib
import grp
import logging
import pwd
import os
import socket
import stat
import threading

import msgpack
import pytest

from tests.unit.frames import C1, C2, LAN, S1, from_lan, make_router, wire
from router.control import protocol
from router.control.client import Client, ControlError
from router.control.server import ControlServer
from router.control import schema
from router.dataplane.events import SwitchChanged
from scapy.layers.inet import UDP


@contextlib.contextmanager
def serving(tmp_path, **options):
    """A real ControlServer on a Unix socket, in a loop on a thread, over a pure router."""
    router = make_router()
    clock = [5.0]
    path = str(tmp_path / "ctl.sock")
    loop = asyncio.new_event_loop()
    server = ControlServer(router, lambda: clock[0], path, **options)
    ready = threading.Event()

    def run():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(5)
    async def shut_down():
        """As asyncio.run ends: the server closed, then every task left (a connection not yet begun) cancelled."""
        await server.close()
        left = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)

    try:
        yield router, server, path, loop
    finally:
        asyncio.run_coroutine_threadsafe(shut_down(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


@pytest.fixture
def served(tmp_path):
    with serving(tmp_path) as served:
        yield served


def test_status_and_sessions(served):
    router, _, path, loop = served
    loop.call_soon_threadsafe(router.receive_frame, LAN, wire(from_lan(C1, S1, UDP(sport=5000, dport=53))), 1.0)
    with Client(path) as client:
        status = client.call("status")
        assert status["passthrough"] == {"pptp": True, "l2tp": True, "ipsec": True}
        assert status["uptime"] == 5.0 and "drop_unsolicited" in status["counters"]
        (session,) = client.call("sessions")
        assert session["proto"] == "udp" and session["inside"] == f"{C1}:5000" and session["idle"] == 4.0
        for key in ("outside", "remote", "state", "packets_in", "packets_out", "bytes_in", "bytes_out"):
            assert key in session


def test_socket_mode_is_0600(served):
    import os
    import stat
    _, _, path, _ = served
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_set_passthrough_and_event_stream(served):
    router, _, path, loop = served
    with Client(path) as watcher, Client(path) as client:
        assert watcher.call("subscribe") == {"seq": 0, "protocol": schema.PROTOCOL_VERSION}
        assert client.call("set_passthrough", "pptp", False) == {"pptp": False, "l2tp": True, "ipsec": True}
        loop.call_soon_threadsafe(lambda: [served[1].publish(e) for e in iter(router.next_event, None)])
        events = watcher.events()
        event = next(events)
        while event["type"] != "switch_changed":
            event = next(events)
        assert event["name"] == "pptp" and event["on"] is False and event["mode"] == "off"


def test_unknown_method_and_bad_params_are_errors(served):
    _, _, path, _ = served
    with Client(path) as client:
        with pytest.raises(ControlError, match="unknown_method"):
            client.call("reboot")
        with pytest.raises(ControlError, match="bad_params"):
            client.call("set_passthrough", "wireguard", True)
        assert client.call("status")["passthrough"]["pptp"] is True   # still served


def test_garbage_gets_an_error_and_a_disconnect(served):
    _, _, path, _ = served
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.sendall(msgpack.packb({"hello": "world"}))
    reply = msgpack.unpackb(s.recv(4096))
    assert reply[0] == protocol.RESPONSE and reply[2]["code"] == "bad_request"
    assert s.recv(4096) == b""
    with Client(path) as client:
        assert client.call("status")


def test_oversized_message_disconnects(served):
    _, _, path, _ = served
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    try:
        s.sendall(b"\xdb" + (4 * 1024 * 1024).to_bytes(4, "big") + bytes(2 * 1024 * 1024))
    except BrokenPipeError:
        pass
    s.settimeout(5)
    try:
        assert s.recv(4096) == b""
    except ConnectionResetError:
        pass
    with Client(path) as client:
        assert client.call("status")


def test_second_server_on_live_socket_refuses(served):
    router, _, path, _ = served
    other = ControlServer(router, lambda: 0.0, path)
    with pytest.raises(OSError, match="already listening"):
        asyncio.run(other.start())


def in_loop(loop, fn, *args):
    """Run ``fn`` on the server's loop thread (the router is not thread-safe) and return its result."""
    async def call():
        return fn(*args)
    return asyncio.run_coroutine_threadsafe(call(), loop).result(5)


def publish_pending(router, server):
    for event in iter(router.next_event, None):
        server.publish(event)


def test_version_and_protocol_in_status(served):
    _, _, path, _ = served
    with Client(path) as client:
        assert client.call("version")["protocol"] == 3
        assert client.call("status")["protocol"] == 3


def test_a_large_table_is_one_answer_written_in_chunks(served):
    router, server, path, loop = served
    for i in range(3000):    # 3000 sessions: more than a 1 MiB message, fifteen chunks
        frame = wire(from_lan(C1, S1, UDP(sport=10000 + i, dport=53)))
        loop.call_soon_threadsafe(router.receive_frame, LAN, frame, 1.0)
    with Client(path) as client:
        sessions = client.call("sessions")
        assert len(sessions) == 3000 and len({s["id"] for s in sessions}) == 3000
        assert client.call("status")["sessions"] == 3000     # the connection is still in step


def test_events_carry_consecutive_seq_from_the_subscription(served):
    router, server, path, loop = served
    with Client(path) as watcher:
        start = watcher.call("subscribe")["seq"]
        for port in (5000, 5001, 5002):
            loop.call_soon_threadsafe(router.receive_frame, LAN, wire(from_lan(C1, S1, UDP(sport=port, dport=53))), 1.0)
        in_loop(loop, publish_pending, router, server)
        events = watcher.events(subscribe=False)
        seqs = [next(events)["seq"] for _ in range(3)]
        assert seqs == [start, start + 1, start + 2]


def test_sessions_updated_tells_only_what_changed(served):
    router, server, path, loop = served
    loop.call_soon_threadsafe(router.receive_frame, LAN, wire(from_lan(C1, S1, UDP(sport=6000, dport=53))), 1.0)
    loop.call_soon_threadsafe(router.receive_frame, LAN, wire(from_lan(C2, S1, UDP(sport=6001, dport=53))), 1.0)
    with Client(path, timeout=10) as watcher:
        watcher.call("subscribe")
        events = watcher.events(subscribe=False)
        first = next(e for e in events if e["type"] == "sessions_updated")
        assert sorted(u["packets_out"] for u in first["sessions"]) == [1, 1]    # everything, the first time
        (c1,) = [s["id"] for s in watcher.call("sessions") if s["inside"].startswith(C1)]
        loop.call_soon_threadsafe(router.receive_frame, LAN, wire(from_lan(C1, S1, UDP(sport=6000, dport=53))), 2.0)
        later = next(e for e in events if e["type"] == "sessions_updated")
        assert [(u["id"], u["packets_out"]) for u in later["sessions"]] == [(c1, 2)]


def test_close_session_ends_it_and_says_so(served):
    router, server, path, loop = served
    loop.call_soon_threadsafe(router.receive_frame, LAN, wire(from_lan(C1, S1, UDP(sport=7000, dport=53))), 1.0)
    with Client(path) as client:
        (session,) = client.call("sessions")
        assert client.call("close_session", session["id"]) is True
        assert client.call("sessions") == []
        with pytest.raises(ControlError, match="not_found"):
            client.call("close_session", session["id"])
        with pytest.raises(ControlError, match="bad_params"):
            client.call("close_session", "one")


def test_capture_streams_copies_of_one_sessions_frames(served, tmp_path):
    router, server, path, loop = served
    loop.call_soon_threadsafe(router.receive_frame, LAN, wire(from_lan(C1, S1, UDP(sport=8000, dport=53))), 1.0)
    loop.call_soon_threadsafe(router.receive_frame, LAN, wire(from_lan(C2, S1, UDP(sport=8001, dport=53))), 1.0)
    with Client(path) as client:
        (target,) = [s["id"] for s in client.call("sessions") if s["inside"] == f"{C1}:8000"]

        def traffic():
            for sport, payload in ((8001, b"other"), (8000, b"one"), (8000, b"two"), (8000, b"three")):
                src = C1 if sport == 8000 else C2
                frame = wire(from_lan(src, S1, UDP(sport=sport, dport=53) / payload))
                loop.call_soon_threadsafe(router.receive_frame, LAN, frame, 2.0)

        threading.Timer(0.3, traffic).start()
        frames = [frame for _, frame in client.capture(target, 2, 10)]
    from scapy.layers.l2 import Ether
    assert [bytes(Ether(f)[UDP].payload) for f in frames] == [b"one", b"two"]    # two asked; C2's not among them
    assert all(Ether(f)[UDP].sport == 8000 for f in frames)


def test_a_subscriber_that_falls_behind_is_told_why_and_dropped(served, monkeypatch):
    from router.control import server as server_mod
    router, server, path, loop = served
    monkeypatch.setattr(server_mod, "QUEUE_LIMIT", 5)
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.sendall(protocol.request(1, "subscribe", []))
    s.settimeout(5)
    s.recv(4096)                      # the answer; from now on this client reads nothing

    def flood():      # one callback: the pump cannot write meanwhile, so the queue overflows
        for i in range(50):
            server.publish(SwitchChanged(1.0, "pptp", bool(i % 2)))

    in_loop(loop, flood)
    unpacker = protocol.unpacker()
    messages = []
    while True:
        data = s.recv(65536)
        if not data:
            break
        unpacker.feed(data)
        messages += list(unpacker)
    dropped = [m for m in messages if m[0] == protocol.NOTIFICATION and m[1] == "dropped"]
    assert dropped and "fell behind" in dropped[0][2][0]["reason"]


# -- trust: who may connect, who did what, and clients that misbehave -----------------------------------------

def test_a_configured_group_owns_the_socket_with_mode_0660(tmp_path):
    group = grp.getgrnam("daemon").gr_gid
    with serving(tmp_path, group=group, mode=0o660) as (_, _, path, _):
        info = os.stat(path)
        assert info.st_gid == group and stat.S_IMODE(info.st_mode) == 0o660


def test_every_change_is_logged_with_the_peers_credentials(served, caplog):
    _, _, path, _ = served
    with caplog.at_level(logging.INFO, logger="vpnrouter.control"), Client(path) as client:
        client.call("status")
        client.call("set_passthrough", "pptp", "single")
        with pytest.raises(ControlError):
            client.call("set_passthrough", "wireguard", True)
    changes = [r.getMessage() for r in caplog.records if r.getMessage().startswith("control: ")]
    me = f"uid {os.getuid()} ({pwd.getpwuid(os.getuid()).pw_name}), pid {os.getpid()}"
    assert changes == [f"control: set_passthrough ['pptp', 'single'] by {me}"]   # not status, not the refusal


def test_clients_over_the_limit_are_told_busy_and_closed(tmp_path, caplog):
    with serving(tmp_path, max_clients=3) as (_, _, path, _), caplog.at_level(logging.WARNING):
        clients = [Client(path) for _ in range(3)]
        for client in clients:
            assert client.call("version")
        extra = socket.socket(socket.AF_UNIX)
        extra.connect(path)
        extra.settimeout(5)
        reply = msgpack.unpackb(extra.recv(4096))
        assert reply[2]["code"] == "busy" and extra.recv(4096) == b""
        clients.pop().close()
        for _ in range(50):     # the server sees the close on its next turn
            try:
                with Client(path) as again:
                    assert again.call("version")
                break
            except ControlError:
                continue
        else:
            pytest.fail("a slot freed by a closed client was not given to a new one")
        for client in clients:
            assert client.call("status")     # the others are served throughout
            client.close()
    assert any("refused" in r.getMessage() for r in caplog.records)


def test_a_message_left_unfinished_ends_the_connection_and_an_idle_one_does_not(tmp_path):
    with serving(tmp_path, partial_timeout=0.3) as (_, _, path, _):
        idle = Client(path)
        assert idle.call("version")
        slow = socket.socket(socket.AF_UNIX)
        slow.connect(path)
        slow.sendall(protocol.request(1, "status", [])[:3])     # and then nothing
        slow.settimeout(10)
        assert slow.recv(4096) == b""                            # the server hung up
        assert idle.call("status")                               # an idle client, between messages, stays


def test_many_connections_and_garbage_leave_the_router_answering(served):
    router, server, path, loop = served
    sockets = []
    try:
        for i in range(200):
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)
            if i % 3 == 0:
                s.sendall(os.urandom(64))
            sockets.append(s)
        loop.call_soon_threadsafe(router.receive_frame, LAN, wire(from_lan(C1, S1, UDP(sport=9000, dport=53))), 1.0)
        with Client(path) as client:
            assert client.call("status")["sessions"] == 1
    finally:
        for s in sockets:
            s.close()
    for _ in range(100):        # let the server see every close before the fixture stops its loop
        if not in_loop(loop, lambda: len(server.clients)):
            break
        threading.Event().wait(0.05)


def test_a_client_that_leaves_its_answers_unread_is_disconnected(served, monkeypatch, caplog):
    from router.control import server as server_module
    router, server, path, loop = served
    monkeypatch.setattr(server_module, "READ_TIMEOUT", 0.5)
    for i in range(3000):       # an answer of over a megabyte, far more than the socket holds
        loop.call_soon_threadsafe(router.receive_frame, LAN, wire(from_lan(C1, S1, UDP(sport=20000 + i, dport=53))), 1.0)
    reader = socket.socket(socket.AF_UNIX)
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader.connect(path)
    with caplog.at_level(logging.WARNING, logger="vpnrouter.control"):
        reader.sendall(protocol.request(1, "sessions", []))     # and read nothing
        unread = lambda: [r for r in caplog.records if "left its answers unread" in r.getMessage()]  # noqa: E731
        for _ in range(100):
            if unread():
                break
            threading.Event().wait(0.1)
        assert unread()
    assert in_loop(loop, lambda: len(server.clients)) == 0
    with Client(path) as client:
        assert client.call("status")["sessions"] == 3000
    reader.close()
