"""The WAN mode (issue 20) in the dashboard's header and switches, and in ``ctl status``: MAP-E with its shared
address, PSID, port set and BR; DS-Lite with its AFTR and switches that have no effect; an older router that says
nothing of its WAN, taken for plain IPv4."""

from __future__ import annotations

import pytest

from router import cli
from router.control import schema
from tui import format as fmt
from tui.widgets.switches import PassthroughNote, SwitchBar, switch_text

from .fake_router import FakeRouter
from .helpers import make_app, screen_text, synced, wait_for
from .samples import PROTOCOLS, WAN_DS_LITE, WAN_MAP_E, demo_table, nat_session

MAP_E_HEADER = " MAP-E 198.51.100.194 PSID 3/4 4,032 ports BR 2001:db8:ffff::1 "
DS_LITE_NOTE = " ⚠ DS-Lite: the AFTR does the NAT; the passthrough switches have no effect"


def header(app) -> str:
    return screen_text(app).splitlines()[0].rstrip()


@pytest.mark.parametrize("wan, brief, note", [
    (WAN_MAP_E, "MAP-E 198.51.100.194 PSID 3/4 4,032 ports BR 2001:db8:ffff::1", None),
    (WAN_DS_LITE, "DS-Lite AFTR 2001:db8:ffff::1", WAN_DS_LITE["note"]),
    (schema.WAN_IPV4, None, None),
    ({**WAN_DS_LITE, "note": None}, "DS-Lite AFTR 2001:db8:ffff::1",
     "the passthrough switches have no effect on this WAN (ds-lite)"),
    ({"mode": "v6only"}, "WAN v6only", None),                       # a mode newer than the dashboard
])
def test_the_wan_in_brief_and_the_passthrough_note(wan, brief, note):
    assert fmt.wan_brief(wan) == brief and fmt.passthrough_note(wan) == note


async def test_the_header_shows_map_e_with_its_address_psid_port_set_and_br(sock, fake):
    fake.extra_status["wan"] = WAN_MAP_E
    app = make_app(sock)
    async with app.run_test(size=(120, 40)) as pilot:
        await synced(pilot)
        await wait_for(pilot, lambda: "MAP-E" in header(app), what="the WAN in the header")
        assert MAP_E_HEADER in header(app) and header(app).endswith(" 13 NAT, 4 VPN")   # short: it all fits
        assert not app.query_one(PassthroughNote).display                                # the switches work
        assert not app.query_one(SwitchBar).has_class("-no-effect")
    async with make_app(sock).run_test(size=(160, 40)) as pilot:
        await synced(pilot)
        await wait_for(pilot, lambda: "MAP-E" in header(pilot.app))
        assert header(pilot.app).endswith(" 13 NAT sessions, 4 VPN flows")                  # wide: in full


async def test_under_ds_lite_the_header_shows_the_aftr_and_the_switches_that_they_have_no_effect(sock, fake):
    fake.extra_status["wan"] = WAN_DS_LITE
    app = make_app(sock)
    async with app.run_test(size=(120, 40)) as pilot:
        await synced(pilot)
        await wait_for(pilot, lambda: "DS-Lite" in header(app), what="the WAN in the header")
        assert " DS-Lite AFTR 2001:db8:ffff::1 " in header(app) and "13 NAT sessions, 4 VPN flows" in header(app)
        lines = screen_text(app).splitlines()
        assert lines[1].startswith(" p  PPTP  ON multi") and lines[2].startswith(DS_LITE_NOTE)
        assert app.query_one(SwitchBar).has_class("-no-effect")
        fake.extra_status["wan"] = schema.WAN_IPV4                       # the router restarted on IPv4
        await wait_for(pilot, lambda: "DS-Lite" not in header(app), what="the next status")
        assert not app.query_one(PassthroughNote).display and "no effect" not in screen_text(app)
        assert "VPN sessions" in screen_text(app).splitlines()[2]


def test_a_switch_without_effect_is_dim():
    pptp = PROTOCOLS["pptp"]
    dim = switch_text(pptp, "p", "multi", None, False, 1, effective=False)
    assert dim.plain == switch_text(pptp, "p", "multi", None, False, 1).plain == " p  PPTP  ON multi  1 call"
    assert any(span.style == "dim" and (span.start, span.end) == (0, len(dim)) for span in dim.spans)


async def test_a_router_that_says_nothing_of_its_wan_has_an_ipv4_one(sock, fake):
    assert "wan" not in fake._m_status(None, [])
    app = make_app(sock)
    async with app.run_test(size=(120, 40)) as pilot:
        await synced(pilot)
        await wait_for(pilot, lambda: app.model.status, what="a status")
        assert app.model.wan == schema.WAN_IPV4
        assert "MAP-E" not in header(app) and "DS-Lite" not in header(app)
        assert not app.query_one(PassthroughNote).display


# -- ctl status ------------------------------------------------------------------------------------------

def ctl_status(sock: str, capsys) -> list[str]:
    assert cli.main(["ctl", "--socket", sock, "status"]) == 0
    return capsys.readouterr().out.splitlines()


@pytest.fixture
def router(sock):
    with FakeRouter(sock, demo_table()) as fake:
        fake.extra_status.update(limits={"sessions": 65536, "sessions_per_host": 4096})
        yield fake


def test_ctl_status_says_the_wan_mode(sock, router, capsys):
    router.extra_status["wan"] = WAN_MAP_E
    lines = ctl_status(sock, capsys)
    assert ("wan mode    MAP-E 198.51.100.194 PSID 3/4 bits, 4032 ports, BR 2001:db8:ffff::1 "
            "(CE 2001:db8:a:2300:0:c633:64c2:3)") in lines
    assert not any("no effect" in line for line in lines)
    router.extra_status["wan"] = WAN_DS_LITE
    lines = ctl_status(sock, capsys)
    passthrough = next(i for i, line in enumerate(lines) if line.startswith("passthrough "))
    assert lines[passthrough] == "passthrough pptp on  l2tp on  ipsec on"
    assert lines[passthrough + 1] == (" " * 12 + "no effect: DS-Lite: the AFTR does the NAT; the passthrough "
                                      "switches have no effect")
    assert "wan mode    DS-Lite B4, AFTR 2001:db8:ffff::1" in lines
    del router.extra_status["wan"]                                   # an older router
    assert "wan mode    IPv4" in ctl_status(sock, capsys)


def test_ctl_status_json_passes_the_wan_through(sock, router, capsys):
    import json
    router.extra_status["wan"] = WAN_MAP_E
    assert cli.main(["ctl", "--socket", sock, "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["wan"] == WAN_MAP_E


# -- IPv6 sessions (the firewall's records) ---------------------------------------------------------------------

IPV6_SESSION = nat_session(901, "tcp", inside="[2001:db8:a:2301::11]:40000", remote="[2001:db8:5::10]:443",
                           outside="[2001:db8:a:2301::11]:40000", family="ipv6")


async def test_ipv6_sessions_are_listed_like_the_ipv4_ones(sock):
    with FakeRouter(sock, demo_table() + [IPV6_SESSION]) as fake:
        fake.extra_status["wan"] = WAN_MAP_E
        app = make_app(sock)
        async with app.run_test(size=(160, 50)) as pilot:
            await synced(pilot)
            await wait_for(pilot, lambda: "2001:db8:5::10" in screen_text(app), what="the IPv6 session's row")
            row = next(line for line in screen_text(app).splitlines() if "2001:db8:5::10" in line)
            assert "[2001:db8:a:2301::11" in row and "IPv6, no NAT" in row and "[2001:db8:5::10]:443" in row
            assert "established" in row                      # the address shortened to its column; whole on Enter
