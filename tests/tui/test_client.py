"""The dashboard's control client without Textual: order of answers and events, errors, reconnection."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

from router.control import protocol, schema
from tui.client import (Connection, Described, Dropped, Events, Link, LinkDown, LinkUp, RequestError, Snapshot,
                        Status, Subscribed)

from .samples import DESCRIPTIONS, nat_session

ROOT = Path(__file__).resolve().parents[2]


async def until(predicate, timeout=5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_an_answer_keeps_its_place_among_the_events_of_one_read(tmp_path):
    """Events written before the answer come before it; those after, after it, even in one read."""
    path = str(tmp_path / "s.sock")
    items = []

    def note(seq):
        return protocol.notification("event", [{"type": "vpn", "seq": seq}])

    async def serve(reader, writer):
        await reader.read(4096)                 # the request, msgid 1
        writer.write(note(0) + protocol.response(1, None, [nat_session(7)]) + note(1))
        await writer.drain()

    server = await asyncio.start_unix_server(serve, path=path)
    conn = await Connection.open(path, items.append)
    result = await conn.request("sessions", then=lambda sessions: items.append(Snapshot(sessions)))
    await until(lambda: len(items) == 3)
    assert [type(i) for i in items] == [Events, Snapshot, Events]
    assert items[0].events[0]["seq"] == 0 and items[2].events[0]["seq"] == 1
    assert result[0]["id"] == 7
    conn.close()
    server.close()


async def test_an_error_answer_is_a_request_error_with_the_routers_reason(sock, fake):
    fake.refuse["set_passthrough"] = ("refused", "the policy forbids it")
    conn = await Connection.open(sock, lambda item: None)
    try:
        await conn.request("set_passthrough", "pptp", False)
    except RequestError as exc:
        assert (exc.code, exc.message) == ("refused", "the policy forbids it")
    else:
        raise AssertionError("no error")
    assert (await conn.request("version"))["protocol"] == schema.PROTOCOL_VERSION
    conn.close()


async def test_a_broken_message_ends_the_connection_not_the_client(tmp_path):
    path = str(tmp_path / "s.sock")

    async def serve(reader, writer):
        await reader.read(4096)
        writer.write(msgpack.packb("not a message"))
        await writer.drain()

    server = await asyncio.start_unix_server(serve, path=path)
    conn = await Connection.open(path, lambda item: None)
    pending = conn.call("status")
    assert "bad message" in await asyncio.wait_for(conn.closed, 5)
    assert isinstance(pending.exception(), ConnectionError)
    server.close()


async def test_the_link_subscribes_reads_the_table_then_status_and_follows_events(sock, fake):
    items = []
    link = Link(sock, items.append, status_interval=0.05)
    task = asyncio.ensure_future(link.run())
    await until(lambda: any(isinstance(i, Status) for i in items))
    assert [type(i) for i in items[:5]] == [LinkUp, Described, Subscribed, Snapshot, Status]
    assert items[1].helpers == DESCRIPTIONS
    assert [m for m, _ in fake.requests[:4]] == ["version", "subscribe", "sessions", "status"]
    fake.open_session(nat_session(99))
    await until(lambda: any(isinstance(i, Events) for i in items))
    await until(lambda: len([m for m, _ in fake.requests if m == "status"]) >= 3)
    assert [m for m, _ in fake.requests].count("sessions") == 1         # no polling of the table
    link.resync()
    await until(lambda: [m for m, _ in fake.requests].count("sessions") == 2)
    link.stop()
    task.cancel()


async def test_the_link_says_when_the_router_goes_and_comes_back(sock, fake):
    items = []
    link = Link(sock, items.append, status_interval=0.05)
    task = asyncio.ensure_future(link.run())
    await until(lambda: any(isinstance(i, Snapshot) for i in items))
    fake.stop()
    await until(lambda: any(isinstance(i, LinkDown) and "no socket" in i.reason for i in items))
    items.clear()
    fake.start()
    await until(lambda: any(isinstance(i, Snapshot) for i in items))
    assert [type(i) for i in items[:3]] == [LinkUp, Described, Subscribed]
    link.stop()
    task.cancel()


async def test_an_older_router_is_named_as_such(sock, fake):
    fake.refuse["version"] = ("unknown_method", "no method 'version'")
    items = []
    link = Link(sock, items.append)
    task = asyncio.ensure_future(link.run())
    await until(lambda: any(isinstance(i, LinkDown) for i in items))
    down = next(i for i in items if isinstance(i, LinkDown))
    assert f"control protocol 1; the dashboard needs {schema.PROTOCOL_VERSION}" in down.reason
    assert "subscribe" not in [m for m, _ in fake.requests]
    link.stop()
    task.cancel()


async def test_a_request_without_a_router_is_refused_with_a_reason(sock):
    link = Link(sock, lambda item: None)
    try:
        await link.call("status")
    except RequestError as exc:
        assert exc.code == "not_connected" and sock in exc.message
    else:
        raise AssertionError("no error")


async def test_being_dropped_for_falling_behind_is_reported(sock, fake):
    items = []
    link = Link(sock, items.append, status_interval=10)
    task = asyncio.ensure_future(link.run())
    await until(lambda: any(isinstance(i, Snapshot) for i in items))

    def drop():
        for writer in list(fake._subscribers):
            writer.write(protocol.notification("dropped", [{"reason": "fell behind: 10000 messages unread",
                                                            "seq": 3}]))
            writer.close()
    fake._run(drop)
    await until(lambda: any(isinstance(i, Dropped) for i in items))
    await until(lambda: [type(i) for i in items].count(Snapshot) == 2)  # and it came back
    link.stop()
    task.cancel()


async def test_capture_hands_over_frames_then_says_why_it_ended(sock, fake):
    fake.frames[7] = [b"\x01" * 60, b"\x02" * 60]
    link = Link(sock, lambda item: None, status_interval=10)
    task = asyncio.ensure_future(link.run())
    await until(lambda: link.conn is not None)
    got = []
    reason, count = await link.capture(7, 2, 1.0, lambda t, frame: got.append(frame))
    assert (reason, count) == ("count", 2) and got == [b"\x01" * 60, b"\x02" * 60]
    with pytest.raises(RequestError) as refused:
        await link.capture(4242, 2, 1.0, lambda t, frame: None)
    assert refused.value.code == "not_found"
    link.stop()
    task.cancel()


def test_the_dashboards_core_imports_without_textual():
    """The model, views, client and decoders are plain Python: Textual stays in app.py and widgets/."""
    code = ("import sys; sys.modules['textual'] = None\n"
            "import tui.model, tui.view, tui.client, tui.format, tui.rates, tui.decode, tui.protocols\n")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)

