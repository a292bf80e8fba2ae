"""The control socket: MessagePack-RPC requests, errors, events; robust against bad clients."""

import asyncio
import socket
import threading

import msgpack
import pytest

from frames import C1, LAN, S1, from_lan, make_router, wire
from router.control import protocol
from router.control.client import Client, ControlError
from router.control.server import ControlServer
from scapy.layers.inet import UDP


@pytest.fixture
def served(tmp_path):
    """A real ControlServer on a Unix socket, in a loop on a thread, over a pure router."""
    router = make_router()
    clock = [5.0]
    path = str(tmp_path / "ctl.sock")
    loop = asyncio.new_event_loop()
    server = ControlServer(router, lambda: clock[0], path)
    ready = threading.Event()

    def run():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(5)
    yield router, server, path, loop
    asyncio.run_coroutine_threadsafe(server.close(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


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
        assert watcher.call("subscribe") is True
        assert client.call("set_passthrough", "pptp", False) == {"pptp": False, "l2tp": True, "ipsec": True}
        loop.call_soon_threadsafe(lambda: [served[1].publish(e) for e in iter(router.next_event, None)])
        events = watcher.events()
        event = next(events)
        while event["type"] != "switch_changed":
            event = next(events)
        assert event["name"] == "pptp" and event["on"] is False


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
