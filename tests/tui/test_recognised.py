"""Sessions the router recognised without a helper (OpenVPN, WireGuard; issue 20) in the dashboard: counted as NAT
sessions, named in the NAT table, and listed in the VPN pane under the titles the router's ``recognisers`` give,
as plain UDP or TCP with no helper.  The dashboard names none of them itself."""

from __future__ import annotations

from scapy.contrib.wireguard import Wireguard, WireguardInitiation
from scapy.layers.inet import UDP

from tests.unit.frames import C1, LAN, S1, from_lan, wire
from tui import format as fmt
from tui.model import Model
from tui.widgets.table import KeyedTable

from .fake_router import FakeRouter
from .helpers import make_app, screen_text, synced, wait_for
from .samples import DESCRIPTIONS, RECOGNISED, demo_table, nat_session, recognised
from .test_real_server import Served

TABLE = demo_table() + [recognised(50), recognised(51, "openvpn-tcp", client="192.168.77.17", by="port")]


def vpn(app) -> KeyedTable:
    return app.query_one("#vpn", KeyedTable)


def nat(app) -> KeyedTable:
    return app.query_one("#nat", KeyedTable)


def model(sessions=TABLE, recognisers=RECOGNISED) -> Model:
    m = Model()
    m.link_up(0.0)
    m.describe(DESCRIPTIONS, 0.0, recognisers)
    m.subscribed(10, 0.0)
    m.load_snapshot(sessions, 0.0)
    m.take_changes()
    return m


def test_recognised_sessions_are_nat_sessions_grouped_by_name():
    m = model()
    assert m.nat_count == len(TABLE) - 4 and sum(m.flow_counts.values()) == 4
    assert m.recognised_groups() == [("openvpn-tcp", {51}), ("wireguard", {50})]   # the router's order
    m.apply_events([{"type": "session_opened", "seq": 10, "session": recognised(52)},
                    {"type": "session_closed", "seq": 11, "session": recognised(51, "openvpn-tcp"),
                     "reason": "timeout"}], now=1.0)
    assert m.recognised_groups() == [("wireguard", {50, 52})]
    assert m.take_changes().added == {52}
    assert m.log[-2].text == ("opened #52 udp 192.168.77.16:40052 -> 203.0.113.1:20052 -> 198.51.100.40:51820 "
                              "(wireguard)")


def test_a_router_older_than_recognisers_sessions_without_the_fields():
    m = model(demo_table(), recognisers=None)
    assert m.recognisers == {} and m.recognised_groups() == []
    assert all(s.recognised is None and "recognised" not in s.fields for s in m.sessions.values())
    m.apply_events([{"type": "session_opened", "seq": 10, "session": recognised(60)}], now=1.0)
    assert m.recognised_groups() == [("wireguard", {60})]             # named, though not described


def test_a_recognisers_description_the_dashboard_cannot_read_is_a_note():
    m = model(recognisers=[{"name": "wireguard", "proto": "udp", "port": "many"}, RECOGNISED[0]])
    assert list(m.recognisers) == ["openvpn"]
    assert "recogniser 'wireguard' is left out" in m.log[-1].text


def test_cells_of_a_recognised_session():
    m = model()
    wg, ovpn = m.sessions[50], m.sessions[51]
    assert fmt.recognised_title("wireguard", m.recognisers["wireguard"], 1) == \
        "WireGuard  1 flow  (UDP 51820, no helper)"
    assert fmt.recognised_title("openvpn-tcp", m.recognisers["openvpn-tcp"], 2) == \
        "OpenVPN (TCP)  2 flows  (TCP 1194, no helper)"
    assert fmt.recognised_title("wireguard", None, 1) == "wireguard  1 flow  (no helper)"
    assert fmt.recognised_cells(wg, 1000.0)[:6] == (
        "50", "192.168.77.16", "198.51.100.40", "wireguard 40050>20050 by first bytes", "active", "")
    assert fmt.recognised_cells(ovpn, 1000.0)[3] == "openvpn-tcp 40051>20051 by port"
    assert fmt.nat_cells(wg, 1000.0)[5] == "wireguard" and fmt.nat_cells(ovpn, 1000.0)[5] == "openvpn-tcp"
    ovpn.state = "fin_out"                                           # not the ordinary state: the state says more
    assert fmt.nat_cells(ovpn, 1000.0)[5] == "fin_out"
    assert ("recognised", "wireguard, by first bytes, no helper") in fmt.detail_lines(wg, 1000.0)


async def test_the_vpn_pane_lists_them_under_the_routers_titles(sock):
    with FakeRouter(sock, TABLE) as fake:
        app = make_app(sock)
        async with app.run_test(size=(120, 50)) as pilot:                    # room for every group
            await synced(pilot)
            await wait_for(pilot, lambda: 50 in vpn(app).rows, what="the WireGuard session in the VPN pane")
            text = screen_text(app)
            assert "OpenVPN (TCP)  1 flow  (TCP 1194, no helper)" in text
            assert "WireGuard  1 flow  (UDP 51820, no helper)" in text
            assert "wireguard 40050>20050 by fi" in text and "openvpn-tcp 40051>20051 by p" in text
            assert vpn(app).rows[-4:] == [("recognised", "openvpn-tcp"), 51, ("recognised", "wireguard"), 50]
            assert 50 in nat(app).rows and 51 in nat(app).rows                  # NAT sessions all the same
            assert "NAT sessions 15 of 15" in text and "15 NAT sessions, 4 VPN flows" in text
            fake.close_session(51)
            await wait_for(pilot, lambda: 51 not in vpn(app).rows, what="the session gone")
            assert ("recognised", "openvpn-tcp") not in vpn(app).rows and "OpenVPN" not in screen_text(app)
            await pilot.press("slash", *"wireguard")                          # the filter knows the name
            await wait_for(pilot, lambda: nat(app).rows == [50], what="the filter")


async def test_a_wireguard_handshake_through_the_real_router_shows_in_the_vpn_pane(sock):
    served = Served(sock)
    try:
        initiation = Wireguard() / WireguardInitiation(sender_index=1)
        served.do(served.router.receive_frame, LAN,
                  wire(from_lan(C1, S1, UDP(sport=41000, dport=51820) / initiation)), 1.0)
        served.udp(C1, 5000)                                                  # DNS: not recognised
        app = make_app(sock)
        async with app.run_test(size=(120, 40)) as pilot:
            await synced(pilot)
            await wait_for(pilot, lambda: len(vpn(app).rows) > 3, what="the WireGuard group")
            assert "WireGuard  1 flow  (UDP 51820, no helper)" in screen_text(app)
            (session,) = [s for s in app.model.sessions.values() if s.recognised]
            assert (session.recognised, session.recognised_by, session.inside) == ("wireguard", "first bytes",
                                                                                 f"{C1}:41000")
            assert [s.recognised for s in app.model.sessions.values()].count(None) == 1
    finally:
        served.close()


async def test_an_opened_session_joins_its_group(sock, fake):
    app = make_app(sock)
    async with app.run_test(size=(120, 50)) as pilot:
        await synced(pilot)
        assert not any(isinstance(key, tuple) for key in vpn(app).rows)
        fake.open_session(recognised(70, "openvpn", client="192.168.77.18"))
        fake.open_session(nat_session(71, remote="198.51.100.41:1194"))       # to the port, not recognised
        await wait_for(pilot, lambda: 70 in vpn(app).rows, what="the OpenVPN session")
        assert 71 not in vpn(app).rows and "OpenVPN  1 flow  (UDP 1194, no helper)" in screen_text(app)
