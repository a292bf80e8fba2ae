"""The dashboard against the router's own control server (router.control.server) over a pure Router.

No TAPs and no root: frames are handed to the Router directly and its events
published as the runtime does.  This keeps the fake router honest: the same
keys must work against the real answers.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from scapy.layers.inet import TCP, UDP
from scapy.packet import Raw

from router.control.server import ControlServer
from tests.unit.frames import C1, C2, C3, LAN, S1, from_lan, make_router, wire
from tui.widgets.screens import RulesScreen
from tui.widgets.table import KeyedTable

from .helpers import make_app, notifications, screen_text, synced, wait_for


class Served:
    """A ControlServer on a loop in a thread; ``do(fn, *args)`` runs on that loop (the router is not
    thread-safe) and publishes the router's events, as runtime/loop.py does after each batch of frames."""

    def __init__(self, path: str, router=None):
        self.router = router if router is not None else make_router()
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

    def pptp(self, client: str, sport: int, now: float = 1.0) -> None:
        """A PPTP control connection's SYN (a VPN attempt)."""
        self.do(self.router.receive_frame, LAN, wire(from_lan(client, S1, TCP(sport=sport, dport=1723, flags="S"))),
                now)

    def l2tp(self, client: str, now: float = 1.0) -> None:
        self.do(self.router.receive_frame, LAN,
                wire(from_lan(client, S1, UDP(sport=1701, dport=1701) / Raw(b"\xc8\x02" + bytes(18)))), now)

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
        path = " fast path " if served.router.cache is not None else " Python only "   # which path the router runs
        await wait_for(pilot, lambda: path in screen_text(app), what="the data path in the header")
        assert notifications(app) == [f"session {first} closed", f"session {second} closed"]


async def test_modes_refusals_rules_and_profiles_from_the_real_control_server(sock, served):
    app = make_app(sock)
    async with app.run_test(size=(220, 40)) as pilot:
        await synced(pilot)
        await pilot.press("P")                              # single: the router confirms it
        await wait_for(pilot, lambda: app.model.switch_mode("pptp") == "single")
        assert served.router.modes["pptp"] == "single"
        served.pptp(C1, 40000)                              # C1 holds PPTP; C2 is refused
        served.pptp(C2, 40001)
        await wait_for(pilot, lambda: f" p  PPTP  ON single {C1} " in screen_text(app), what="the holder")
        await wait_for(pilot, lambda: f"PPTP: {C2} -> {S1} refused (single passthrough held by {C1})"
                       in screen_text(app))

        served.do(served.router.add_rule, {"vpn": "l2tp", "client": C3, "action": "deny"}, None, 1.0)
        served.l2tp(C3)
        await wait_for(pilot, lambda: f"L2TP: {C3} -> {S1} denied by rule 1" in screen_text(app))
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, RulesScreen) and app.screen.shown is not None)
        assert app.screen.shown["rules"] == [{"index": 1, "vpn": "l2tp", "client": f"{C3}/32",
                                             "server": "0.0.0.0/0", "action": "deny", "hits": 1}]
        assert "default action: allow" in screen_text(app)
        await pilot.press("escape")

        served.do(served.router.set_profile, "strict", 2.0)
        await wait_for(pilot, lambda: "profile strict: APDM/APDF, no hairpinning" in screen_text(app))
        assert app.model.switch_mode("pptp") == "off" and " p  PPTP  OFF " in screen_text(app)
        assert "applies to new sessions; existing sessions keep the behaviour they were made with" in screen_text(app)
        await pilot.press("p")                              # on: the router brings back the mode it had
        await wait_for(pilot, lambda: app.model.switch_mode("pptp") == "single")
        assert served.router.modes["pptp"] == "single"
