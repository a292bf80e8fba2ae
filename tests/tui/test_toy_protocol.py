"""Issue 18's proof: a fourth protocol, registered with nothing but its own module (``tests/toyproto.py``), goes
through the real config parser, router, control server, ``ctl`` and dashboard, each of which learns it from the
registry (the dashboard from the router).  No TAPs: frames are handed to the router as the runtime would."""

from __future__ import annotations

import json

import pytest
from scapy.packet import Raw

from router import cli
from tests.toyproto import TOY_PROTO, registered
from tests.unit.frames import C1, LAN, S1, WAN, from_lan, from_wan, make_router, wire
from tui.widgets.table import KeyedTable

from .helpers import make_app, screen_text, synced, wait_for
from .test_real_server import Served


@pytest.fixture
def toy(sock):
    """The registry with the toy in it, and a router whose configuration says ``[passthrough] toy = false``."""
    with registered():
        served = Served(sock, make_router(passthrough={"toy": False}, control={"socket": sock}))
        try:
            yield served
        finally:
            served.close()


def ctl(sock: str, capsys, *args: str) -> str:
    """``vpnrouter ctl`` as a user runs it (in this process, so it sees the same registry); what it printed."""
    assert cli.main(["ctl", "--socket", sock, *args]) == 0
    return capsys.readouterr().out


async def test_a_fourth_protocol_through_config_router_control_ctl_and_dashboard(sock, toy, capsys):
    router = toy.router
    assert router.switches == {"pptp": True, "l2tp": True, "ipsec": True, "toy": False}   # the config's
    toy.do(router.receive_frame, LAN, wire(from_lan(C1, S1, Raw(b"\x07hop"), proto=TOY_PROTO)), 1.0)
    assert router.counters["drop_passthrough_off"] == 1 and not router.session_refs()

    assert ctl(sock, capsys, "passthrough", "toy", "on") == "toy passthrough on\n"
    assert router.switches["toy"] is True
    toy.do(router.receive_frame, LAN, wire(from_lan(C1, S1, Raw(b"\x07hop"), proto=TOY_PROTO)), 2.0)
    toy.do(router.receive_frame, WAN, wire(from_wan(S1, Raw(b"\x07back"), proto=TOY_PROTO)), 2.5)
    status = json.loads(ctl(sock, capsys, "status", "--json"))
    assert status["passthrough"]["toy"] is True and status["passthrough_mode"]["toy"] == "multi"
    assert status["counters"]["toy_hops"] == 1 and status["counters"]["drop_toy_no_hop"] == 0
    assert "toy on" in ctl(sock, capsys, "status")
    (hop,) = json.loads(ctl(sock, capsys, "sessions", "--json"))
    assert (hop["vpn"], hop["proto"], hop["client"], hop["server"], hop["tag"]) == ("toy", "toy", C1, S1, 7)
    assert (hop["packets_out"], hop["packets_in"]) == (1, 1)

    app = make_app(sock)
    async with app.run_test(size=(140, 40)) as pilot:
        await synced(pilot)
        vpn = app.query_one("#vpn", KeyedTable)
        await wait_for(pilot, lambda: hop["id"] in vpn.rows, what="the hop in the VPN pane")
        text = screen_text(app)
        assert " t  Toy  ON multi  1 hop" in text                              # its switch, key and count
        assert "Toy  1 hop  (tag of the hop)" in text and "tag 7" in text      # its group and its IDs
        await pilot.press("T")                                                 # its own keys
        await wait_for(pilot, lambda: router.modes["toy"] == "single", what="toy single")
        await pilot.press("t")
        await wait_for(pilot, lambda: router.switches["toy"] is False, what="toy off")
        await wait_for(pilot, lambda: " t  Toy  OFF " in screen_text(app), what="the switch shown off")
        await wait_for(pilot, lambda: hop["id"] not in vpn.rows, what="the hop ended with its switch")
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: "Toy passthrough on/off" in screen_text(app), what="its help line")
