"""The dashboard learns its switches, keys and VPN groups from the router: descriptions that come late or not at
all, a fourth protocol no code of the dashboard knows, a protocol key that is one of the dashboard's own."""

from __future__ import annotations

from textual.binding import BindingsMap

from tui.client import Described
from tui.keys import OWN_BINDINGS, help_lines
from tui.protocols import protocol_keys
from tui.widgets.screens import HelpScreen

from .fake_router import FakeRouter
from .helpers import make_app, requests, screen_text, synced, wait_for
from .samples import DESCRIPTIONS, PROTOCOLS, TOY, demo_table, nat_session, pptp_call, toy_hop

FOOTER = ("p PPTP l L2TP i IPsec  P L I Single/multi / Filter ⏎ Details k Close c Pcap r Rules space Pause ? Help "
          "q Quit")
"""The footer today, once connected to a router with the three protocols."""


def switch_line(app) -> str:
    return screen_text(app).splitlines()[1]


def footer(app) -> str:
    return screen_text(app).splitlines()[-1]


def log_texts(app) -> list[str]:
    return [entry.text for entry in app.model.log]


async def test_a_router_that_describes_no_protocols_shows_no_switches_until_descriptions_come(sock, fake):
    fake.helpers = None
    app = make_app(sock)
    async with app.run_test(size=(120, 40)) as pilot:
        await synced(pilot)
        await wait_for(pilot, lambda: app.model.status, what="a status")
        assert not switch_line(app).strip() and "PPTP" not in footer(app)
        assert any("describes no VPN protocols" in text for text in log_texts(app))
        assert app.nat_table.rows == [s["id"] for s in demo_table()]            # every session is NAT
        await pilot.press("p")
        assert requests(fake, "set_passthrough") == []

        app.post_message(app.LinkMessage(Described(DESCRIPTIONS)))             # after the table: sorted again
        await wait_for(pilot, lambda: " p  PPTP  ON multi  1 call" in switch_line(app), what="the switches")
        assert " i  IPsec  ON multi  2 SAs" in switch_line(app)
        assert footer(app).startswith(FOOTER)
        assert app.nat_table.rows == [s["id"] for s in demo_table() if s["id"] > 4]
        assert "PPTP  1 call" in screen_text(app) and "call 0>17<>33" in screen_text(app)
        await pilot.press("p")
        await wait_for(pilot, lambda: app.model.switch_mode("pptp") == "off")
        assert requests(fake, "set_passthrough") == [["pptp", "off"]]


async def test_a_fourth_protocol_has_its_switch_its_keys_and_its_group(tmp_path):
    sock = str(tmp_path / "ctl.sock")
    with FakeRouter(sock, [pptp_call(1), toy_hop(40), nat_session(41)], helpers=DESCRIPTIONS + [TOY]) as fake:
        app = make_app(sock)
        async with app.run_test(size=(160, 40)) as pilot:
            await synced(pilot)
            await wait_for(pilot, lambda: " t  Toy  ON multi  1 hop" in switch_line(app), what="the toy's switch")
            assert " p  PPTP  ON multi  1 call" in switch_line(app)
            assert footer(app).startswith("p PPTP l L2TP i IPsec t Toy  P L I T Single/multi / Filter ⏎")
            text = screen_text(app)
            assert "Toy  1 hop  (Hop ID client<>relay, via nodes)" in text and "hop 7<>70 via n1" in text
            assert app.nat_table.rows == [41]
            await pilot.press("t")
            await wait_for(pilot, lambda: app.model.switch_mode("toy") == "off")
            await pilot.press("T")
            await wait_for(pilot, lambda: app.model.switch_mode("toy") == "single")
            assert requests(fake, "set_passthrough") == [["toy", "off"], ["toy", "single"]]
            await wait_for(pilot, lambda: " t  Toy  ON single 192.168.77.15 " in switch_line(app))
            await wait_for(pilot, lambda: "Toy passthrough on (single)" in screen_text(app))
            fake.publish({"type": "vpn", "vpn": "toy", "event": "node_up", "id": 40, "node": "n2"})
            await wait_for(pilot, lambda: "hop 7<>70 via n1,n2" in screen_text(app))
            fake.publish({"type": "vpn", "vpn": "toy", "event": "hop_down", "id": 40})
            await wait_for(pilot, lambda: "Toy  0 hops" in screen_text(app))
            await pilot.press("question_mark")
            assert isinstance(app.screen, HelpScreen)
            text = screen_text(app)
            assert " t " in text and " Toy passthrough on/off " in text and " P L I T " in text
            assert " PPTP, L2TP, IPsec, Toy passthrough single (one LAN client at a time)" in text


async def test_a_protocol_key_that_is_the_dashboards_own_stays_the_dashboards(tmp_path):
    sock = str(tmp_path / "ctl.sock")
    with FakeRouter(sock, demo_table() + [toy_hop(40)], helpers=DESCRIPTIONS + [{**TOY, "key": "q"}]) as fake:
        app = make_app(sock)
        async with app.run_test(size=(160, 40)) as pilot:
            await synced(pilot)
            await wait_for(pilot, lambda: "    Toy  ON multi  1 hop" in switch_line(app), what="a switch, no key")
            assert "Toy asks for the key q, which is Quit: Toy on/off has no key" in log_texts(app)
            assert footer(app).startswith("p PPTP l L2TP i IPsec  P L I Q Single/multi / Filter ⏎")
            await pilot.press("Q")                               # the capital is free: it is the toy's
            await wait_for(pilot, lambda: app.model.switch_mode("toy") == "single")
            assert requests(fake, "set_passthrough") == [["toy", "single"]]
            await pilot.press("q")
            await pilot.pause(0.1)
            assert not app.is_running


def test_the_help_screens_lines_for_the_registrys_protocols_are_todays():
    keys, notes = protocol_keys(PROTOCOLS, {key: b.description for key, b in BindingsMap(OWN_BINDINGS)})
    assert notes == [] and help_lines(keys)[:5] == [
        ("p", "PPTP passthrough on/off"), ("l", "L2TP passthrough on/off"), ("i", "IPsec passthrough on/off"),
        ("P L I", "PPTP, L2TP, IPsec passthrough single (one LAN client at a time) / multi; from off: single"),
        ("r", "the access rules and their hits (r there: read them again)")]
