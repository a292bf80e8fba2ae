"""The dashboard against the router's own control server (router.control.server) over a pure Router.

No TAPs and no root: frames are handed to the Router directly and its events
published as the runtime does.  This keeps the fake router honest: the same
keys must work against the real answers.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from scapy.layers.inet import UDP

from router.control.server import ControlServer
from tests.unit.frames import C1, C2, LAN, S1, from_lan, make_router, wire
from tui.widgets.table import KeyedTable

from .helpers import make_app, notifications, screen_text, synced, wait_for


class Served:
    """A ControlServer on a loop in a thread; ``do(fn, *args)`` runs on that loop (the router is not
    thread-safe) and publishes the router's events, as runtime/loop.py does after each batch of frames."""

    def __init__(self, path: str):
        self.router = make_router()
        self.loop = asyncio.new_event_loop()
        self.server = ControlServer(self.router, lambda: 5.0, path, on_change=self.publish)
        ready = threading.Event()

        def run():
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.server.start())
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(5)

    def publish(self) -> None:
        for event in iter(self.router.next_event, None):
            self.server.publish(event)

    def do(self, fn, *args):
        async def call():
            result = fn(*args)
            self.publish()
            return result
        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(5)

    def udp(self, client: str, sport: int, now: float = 1.0) -> None:
        self.do(self.router.receive_frame, LAN, wire(from_lan(client, S1, UDP(sport=sport, dport=53))), now)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def served(sock):
    served = Served(sock)
    yield served
    served.close()


async def test_the_dashboard_follows_the_real_control_server(sock, served):
    served.udp(C1, 5000)
    app = make_app(sock)
    async with app.run_test(size=(120, 40)) as pilot:
        await synced(pilot)
        nat = app.query_one("#nat", KeyedTable)
        assert len(nat.rows) == 1 and f"{C1}:5000" in screen_text(app)
        served.udp(C2, 5001)
        await wait_for(pilot, lambda: len(nat.rows) == 2, what="session_opened from the server")
        assert f"{C2}:5001" in screen_text(app)

        await pilot.press("p")                              # the switch, as the router confirms it
        await wait_for(pilot, lambda: app.model.switches["pptp"] is False)
        assert served.router.switches["pptp"] is False
        await wait_for(pilot, lambda: "PPTP passthrough off" in screen_text(app))

        first, second = nat.rows
        assert nat.cursor_key == first
        await pilot.press("k", "y")                         # close, confirmed by session_closed
        await wait_for(pilot, lambda: first not in nat.rows)
        assert len(served.do(served.router.session_refs)) == 1

        await pilot.press("k", "y")
        await wait_for(pilot, lambda: not nat.rows)
        served.udp(C1, 5002)
        await wait_for(pilot, lambda: len(nat.rows) == 1)
        await wait_for(pilot, lambda: app.model.uptime is not None)
        assert notifications(app) == [f"session {first} closed", f"session {second} closed"]
