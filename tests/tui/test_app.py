"""The dashboard driven with Pilot against the fake router on a Unix socket."""

from __future__ import annotations

from pathlib import Path

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import rdpcap

from tui.widgets.screens import ConfirmScreen, DetailsScreen, HelpScreen, RulesScreen
from tui.widgets.switches import switch_text
from tui.widgets.table import KeyedTable

from .fake_router import FakeRouter
from .helpers import make_app, notifications, requests, screen_text, synced, wait_for
from .samples import PROTOCOLS, demo_table, nat_session


def nat(app) -> KeyedTable:
    return app.query_one("#nat", KeyedTable)


def switch_line(app) -> str:
    return screen_text(app).splitlines()[1]


async def test_the_screen_shows_switches_vpn_sessions_nat_sessions_and_the_link(sock, fake):
    app = make_app(sock)
    async with app.run_test(size=(120, 40)) as pilot:
        await synced(pilot)
        text = screen_text(app)
        assert "connected" in text and sock[-30:] in text and "up 01:02:0" in text
        for line in (" p  PPTP  ON multi  1 call", " l  L2TP  ON multi  1 tunnel", " i  IPsec  ON multi  2 SAs"):
            assert line in text
        assert "NAT sessions 13 of 13  sort id ▲  profile default: EIM/ADF, hairpinning" in text
        assert "VPN sessions  access rules: none, default allow (r)" in text
        assert "PPTP  1 call" in text and "call 0>17<>33" in text
        assert "tun 5>5<>9 ses 1<>4" in text and "NAT-T ESP c0ffee01/0badf00d" in text
        assert "raw ESP c0ffee01/0badf00d" in text
        assert "192.168.77.11:40001" in text and "198.51.100.7:1723" in text
        assert "NAT sessions 13 of 13" in text
        assert nat(app).rows == [s["id"] for s in demo_table() if "call_id" not in s and s["id"] > 4]


async def test_switch_keys_ask_the_router_and_show_what_it_confirms(sock, fake):
    app = make_app(sock)
    async with app.run_test(size=(120, 40)) as pilot:
        await synced(pilot)
        await pilot.press("p")
        await wait_for(pilot, lambda: app.model.switches["pptp"] is False)
        assert requests(fake, "set_passthrough") == [["pptp", "off"]]
        assert " p  PPTP  OFF " in screen_text(app)
        await pilot.press("l", "i")
        await wait_for(pilot, lambda: not app.model.switches["l2tp"] and not app.model.switches["ipsec"])
        assert requests(fake, "set_passthrough")[1:] == [["l2tp", "off"], ["ipsec", "off"]]
        await pilot.press("p")
        await wait_for(pilot, lambda: app.model.switch_mode("pptp") == "multi")
        assert requests(fake, "set_passthrough")[-1] == ["pptp", "on"]
        assert " p  PPTP  ON multi" in screen_text(app)
        await wait_for(pilot, lambda: "PPTP passthrough on (multi)" in screen_text(app), what="the event in the log")


async def test_capital_keys_switch_between_single_and_multi_and_on_brings_the_mode_back(sock, fake):
    app = make_app(sock)
    async with app.run_test(size=(120, 40)) as pilot:
        await synced(pilot)
        await pilot.press("P")
        await wait_for(pilot, lambda: app.model.switch_mode("pptp") == "single")
        assert requests(fake, "set_passthrough") == [["pptp", "single"]]
        await wait_for(pilot, lambda: " p  PPTP  ON single 192.168.77.11 " in screen_text(app),
                       what="the holder, from the next status")
        await pilot.press("P")
        await wait_for(pilot, lambda: app.model.switch_mode("pptp") == "multi")
        assert requests(fake, "set_passthrough")[-1] == ["pptp", "multi"]
        assert " p  PPTP  ON multi  1 call" in screen_text(app) and "192.168.77.11 " not in switch_line(app)
        await pilot.press("P", "p")                          # single, then off
        await wait_for(pilot, lambda: app.model.switch_mode("pptp") == "off")
        await pilot.press("p")                               # on again: the router brings single back
        await wait_for(pilot, lambda: app.model.switch_mode("pptp") == "single")
        assert requests(fake, "set_passthrough")[-3:] == [["pptp", "single"], ["pptp", "off"], ["pptp", "on"]]
        await pilot.press("p")
        await wait_for(pilot, lambda: app.model.switch_mode("pptp") == "off")
        await pilot.press("P")                               # from off, P turns it on in single mode
        await wait_for(pilot, lambda: app.model.switch_mode("pptp") == "single")
        assert requests(fake, "set_passthrough")[-2:] == [["pptp", "off"], ["pptp", "single"]]
        await pilot.press("L", "I")
        await wait_for(pilot, lambda: app.model.switch_mode("l2tp") == app.model.switch_mode("ipsec") == "single")
        assert requests(fake, "set_passthrough")[-2:] == [["l2tp", "single"], ["ipsec", "single"]]
        await wait_for(pilot, lambda: " i  IPsec  ON single 192.168.77.13 " in switch_line(app))
        assert " l  L2TP  ON single 192.168.77.12 " in switch_line(app)
        assert "IPsec passthrough on (single)" in screen_text(app)


def test_a_switch_shows_its_holder_and_count_only_if_they_fit_whole():
    pptp, l2tp, ipsec = (PROTOCOLS[name] for name in ("pptp", "l2tp", "ipsec"))
    full = switch_text(pptp, "p", "single", "192.168.77.11", False, 1)
    assert full.plain == " p  PPTP  ON single 192.168.77.11  1 call"
    assert switch_text(pptp, "p", "single", "192.168.77.11", False, 1, width=40).plain == \
        " p  PPTP  ON single 192.168.77.11 "
    assert switch_text(pptp, "p", "single", "192.168.77.11", False, 3, width=30).plain == \
        " p  PPTP  ON single  3 calls"
    assert switch_text(l2tp, "l", "multi", None, True, 0).plain == " l  L2TP  ON multi (asking)  0 tunnels"
    assert switch_text(ipsec, "i", "off", None, False, 0).plain == " i  IPsec  OFF  0 SAs"
    assert switch_text(ipsec, "i", "on", None, False, 2).plain == " i  IPsec  ON  2 SAs"    # mode not known yet
    assert switch_text(ipsec, "i", None, None, False, 0).plain == " i  IPsec   ?   0 SAs"


async def test_a_refused_switch_is_shown_with_its_reason_and_the_switch_stays(sock, fake):
    fake.refuse["set_passthrough"] = ("refused", "pptp is locked by the configuration")
    app = make_app(sock)
    async with app.run_test(size=(120, 40)) as pilot:
        await synced(pilot)
        await pilot.press("p")
        await wait_for(pilot, lambda: notifications(app))
        assert "pptp is locked by the configuration" in notifications(app)[0]
        assert app.model.switches["pptp"] is True and not app.model.pending
        assert " p  PPTP  ON" in screen_text(app)
        assert app.is_running


async def test_the_table_follows_events_and_reads_sessions_only_once(sock, fake):
    app = make_app(sock)
    async with app.run_test(size=(120, 40)) as pilot:
        await synced(pilot)
        fake.open_session(nat_session(50, "tcp", inside="192.168.77.50:5000", remote="8.8.8.8:443"))
        await wait_for(pilot, lambda: 50 in nat(app).rows)
        assert "8.8.8.8:443" in screen_text(app)
        fake.update_sessions([{"id": 50, "state": "established", "idle": 0.0, "packets_in": 1234,
                               "packets_out": 5678, "bytes_in": 9_000_000, "bytes_out": 12_000}])
        await wait_for(pilot, lambda: "1.23k/5.68k" in screen_text(app))
        assert "9M/12k" in screen_text(app)
        fake.close_session(6)
        await wait_for(pilot, lambda: 6 not in nat(app).rows)
        await wait_for(pilot, lambda: len(requests(fake, "status")) >= 3)
        assert len(requests(fake, "sessions")) == 1


async def test_a_gap_in_events_makes_it_read_the_table_again(sock, fake):
    app = make_app(sock)
    async with app.run_test(size=(120, 40)) as pilot:
        await synced(pilot)
        fake.change_quietly(lambda sessions: sessions.update({77: nat_session(77, remote="9.9.9.9:53")}))
        fake.skip_seq(3)
        fake.open_session(nat_session(78))
        await wait_for(pilot, lambda: 77 in nat(app).rows, what="the resync")
        assert len(requests(fake, "sessions")) == 2
        assert "reading the table again: events" in screen_text(app)


async def test_it_stays_open_while_the_router_is_gone_and_resynchronises(sock, fake):
    app = make_app(sock)
    async with app.run_test(size=(120, 40)) as pilot:
        await synced(pilot)
        fake.stop()
        await wait_for(pilot, lambda: "disconnected, retrying" in screen_text(app))
        await wait_for(pilot, lambda: "no socket at" in screen_text(app))
        assert 6 in nat(app).rows                           # the last picture stays
        await pilot.press("p")                              # no router: said, not crashed
        await wait_for(pilot, lambda: any("not connected" in n for n in notifications(app)))
        fake.sessions = {s["id"]: s for s in demo_table(nat=2)}
        fake.sessions[90] = nat_session(90)
        fake.start()
        await wait_for(pilot, lambda: app.model.synced and 90 in nat(app).rows, timeout=10)
        assert 10 not in nat(app).rows
        assert "connected" in screen_text(app) and "disconnected" not in screen_text(app).splitlines()[0]


async def test_it_waits_for_a_router_that_is_not_there_yet(sock):
    app = make_app(sock)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: "disconnected, retrying" in screen_text(app))
        with FakeRouter(sock, demo_table()):
            await wait_for(pilot, lambda: app.model.synced, timeout=10)
            assert "NAT sessions 13 of 13" in screen_text(app)


async def test_the_filter_narrows_the_nat_table_and_escape_clears_it(sock, fake):
    app = make_app(sock)
    async with app.run_test(size=(120, 40)) as pilot:
        await synced(pilot)
        await pilot.press("slash")
        await pilot.press(*"proto=tcp")
        await wait_for(pilot, lambda: "filter: proto=tcp" in screen_text(app))
        tcp = [s["id"] for s in demo_table() if s["proto"] == "tcp" and s["id"] > 4]
        assert nat(app).rows == tcp
        assert f"NAT sessions {len(tcp)} of 13" in screen_text(app)
        await pilot.press("enter")                          # back to the table, the filter kept
        assert app.focused is nat(app) and nat(app).rows == tcp
        fake.open_session(nat_session(60, "tcp"))
        fake.open_session(nat_session(61, "udp"))
        await wait_for(pilot, lambda: 60 in nat(app).rows)
        assert 61 not in nat(app).rows
        await pilot.press("slash", "space", *"idle>soon")
        await wait_for(pilot, lambda: "needs a number" in screen_text(app))
        await pilot.press(*["backspace"] * 4, "5")
        await wait_for(pilot, lambda: "filter: proto=tcp idle>5" in screen_text(app))
        assert "needs a number" not in screen_text(app)
        await pilot.press("escape")
        await wait_for(pilot, lambda: 61 in nat(app).rows)
        assert "filter:" not in screen_text(app)


async def test_the_selection_stays_on_its_row_when_rows_move(sock, fake):
    app = make_app(sock)
    async with app.run_test(size=(120, 40)) as pilot:
        await synced(pilot)
        await pilot.press(*"s" * 8, "S")                     # sort by bytes, largest first
        assert app.nat_view.sort == "bytes" and app.nat_view.reverse
        await pilot.press("home", "down", "down", "down")
        chosen = nat(app).cursor_key
        place = nat(app).cursor_index
        assert place == 3
        # the row above gets no more bytes; rows below grow past it; new rows arrive
        grow = [i for i in nat(app).rows[place + 1:]]
        fake.update_sessions([{"id": i, "state": "active", "idle": 0.0, "packets_in": 10**6, "packets_out": 1,
                               "bytes_in": 10**9 + i, "bytes_out": 0} for i in grow])
        for sid in range(200, 210):
            fake.open_session(nat_session(sid, bytes_in=10**10))
        await wait_for(pilot, lambda: nat(app).rows.index(chosen) != place)
        assert nat(app).cursor_key == chosen
        await pilot.press("k")
        assert isinstance(app.screen, ConfirmScreen) and f"session {chosen}" in screen_text(app)
        await pilot.press("y")
        await wait_for(pilot, lambda: requests(fake, "close_session"))
        assert requests(fake, "close_session") == [[chosen]]
        await wait_for(pilot, lambda: chosen not in nat(app).rows)
        assert nat(app).cursor_key is not None and nat(app).cursor_key != chosen


async def test_clicking_a_column_title_sorts_by_it(sock, fake):
    app = make_app(sock)
    async with app.run_test(size=(120, 40)) as pilot:
        await synced(pilot)
        x = sum(c.width + 1 for c in nat(app).columns[:4]) - 4     # inside, outside shrink by one at 120
        await pilot.click("#nat", offset=(x + 2, 0))
        assert (app.nat_view.sort, app.nat_view.reverse) == ("remote", False)
        assert "sort remote ▲" in screen_text(app)
        await pilot.click("#nat", offset=(x + 2, 0))
        assert app.nat_view.reverse
        remotes = [app.model.sessions[i].remote for i in nat(app).rows]
        assert remotes[0] == "198.51.100.18:53" and remotes[-1] == "198.51.100.7:443"


async def test_the_selected_row_keeps_its_place_on_the_screen_when_rows_arrive_above(tmp_path):
    sock = str(tmp_path / "ctl.sock")
    with FakeRouter(sock, demo_table(nat=80)) as fake:
        app = make_app(sock)
        async with app.run_test(size=(120, 40)) as pilot:
            await synced(pilot)
            await pilot.press("pagedown", "pagedown", "up", "up")
            table = nat(app)
            chosen, screen_row = table.cursor_key, table.cursor_index - table.scroll_offset.y
            assert table.scroll_offset.y > 0 and screen_row > 0
            for sid in range(1, 6):                     # five new sessions, then newest first:
                fake.open_session(nat_session(1000 + sid))
            await pilot.press("S")                      # every row moves around the selected one
            await wait_for(pilot, lambda: 1005 in table.rows)
            assert table.cursor_key == chosen
            assert table.cursor_index - table.scroll_offset.y == screen_row


async def test_close_asks_first_and_no_means_no(sock, fake):
    app = make_app(sock)
    async with app.run_test(size=(120, 40)) as pilot:
        await synced(pilot)
        await pilot.press("k")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await pilot.pause(0.2)
        assert not isinstance(app.screen, ConfirmScreen) and requests(fake, "close_session") == []


async def test_closing_a_session_the_router_no_longer_has_is_a_notification(sock, fake):
    app = make_app(sock)
    async with app.run_test(size=(120, 40)) as pilot:
        await synced(pilot)
        await pilot.press("space")                          # paused: the row stays on screen
        fake.close_session(5)
        await pilot.press("k", "y")
        await wait_for(pilot, lambda: notifications(app))
        assert "no session or flow with id 5" in notifications(app)[0]
        assert app.is_running


async def test_enter_shows_a_vpn_flows_state_and_its_last_packets_decoded(sock, fake):
    gre = Ether() / IP(src="192.168.77.11", dst="198.51.100.7", proto=47) / \
        Raw(bytes.fromhex("3081880b0004001100000005" "00000004") + b"ppp!")
    fake.frames[1] = [bytes(gre)] * 2
    app = make_app(sock)
    async with app.run_test(size=(120, 40)) as pilot:
        await synced(pilot)
        await pilot.press("shift+tab")                      # the VPN pane
        assert app.focused is app.query_one("#vpn", KeyedTable)
        assert app.focused.cursor_key == 1                  # the PPTP call, past its group's title
        await pilot.press("enter")
        assert isinstance(app.screen, DetailsScreen)
        await wait_for(pilot, lambda: "GRE v1 proto 0x880b call 17" in screen_text(app))
        assert requests(fake, "capture") == [[1, 5, 3.0]]
        text = screen_text(app)
        assert "translated_call_id" in text and "call_state" in text and "established" in text
        await wait_for(pilot, lambda: "last 2 frames (time is up)" in screen_text(app))
        await pilot.press("escape")
        assert not isinstance(app.screen, DetailsScreen)


async def test_c_writes_a_pcap_and_shows_where(sock, fake, tmp_path):
    frame = bytes(Ether() / IP(src="192.168.77.11", dst="198.51.100.7") / TCP(sport=40001, dport=1723))
    fake.frames[5] = [frame] * 3
    app = make_app(sock, capture_dir=tmp_path, capture_frames=3)
    async with app.run_test(size=(120, 40)) as pilot:
        await synced(pilot)
        assert nat(app).cursor_key == 5
        await pilot.press("c")
        await wait_for(pilot, lambda: any("frames written" in n for n in notifications(app)))
        path = next(Path(tmp_path).glob("vpnrouter-5-*.pcap"))
        assert any(str(path) in n for n in notifications(app))
        assert f"3 frames written to {path}" in notifications(app)[-1]
        assert [bytes(p) for p in rdpcap(str(path))] == [frame] * 3
        assert requests(fake, "capture") == [[5, 3, 10.0]]


async def test_a_refused_capture_leaves_no_file(sock, fake, tmp_path):
    fake.refuse["capture"] = ("bad_params", "session 5 is being captured already")
    app = make_app(sock, capture_dir=tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await synced(pilot)
        await pilot.press("c")
        await wait_for(pilot, lambda: any("failed" in n for n in notifications(app)))
        assert "being captured already" in notifications(app)[-1]
        assert not list(Path(tmp_path).glob("*.pcap"))


async def test_space_pauses_the_view_and_resume_catches_up(sock, fake):
    app = make_app(sock)
    async with app.run_test(size=(120, 40)) as pilot:
        await synced(pilot)
        await pilot.press("space")
        assert "PAUSED" in screen_text(app)
        fake.open_session(nat_session(70))
        fake.close_session(6)
        await pilot.pause(0.3)
        assert 70 not in nat(app).rows and 6 in nat(app).rows
        await pilot.press("space")
        await wait_for(pilot, lambda: 70 in nat(app).rows and 6 not in nat(app).rows)
        assert "PAUSED" not in screen_text(app)


async def test_the_event_log_follows_new_events_unless_scrolled_up(sock, fake):
    app = make_app(sock)
    async with app.run_test(size=(120, 40)) as pilot:
        await synced(pilot)
        log = app.event_log
        for sid in range(100, 130):
            fake.open_session(nat_session(sid))
        await wait_for(pilot, lambda: "opened #129" in screen_text(app))
        assert log.follow and log.scroll_y == log.max_scroll_y > 0
        log.focus()
        await pilot.press("home")
        fake.close_session(129, reason="tcp_rst")
        await wait_for(pilot, lambda: "tcp_rst" in log.entries[-1].text)
        assert not log.follow and log.scroll_y == 0 and "closed #129" not in screen_text(app)
        await pilot.press("end")
        await wait_for(pilot, lambda: "closed #129" in screen_text(app))
        assert log.follow


async def test_tab_moves_between_panes(sock, fake):
    app = make_app(sock)
    async with app.run_test(size=(120, 40)) as pilot:
        await synced(pilot)
        seen = [app.focused.id]
        for _ in range(3):
            await pilot.press("tab")
            seen.append(app.focused.id)
        assert seen == ["nat", "events", "vpn", "nat"]


async def test_question_mark_lists_every_key(sock, fake):
    app = make_app(sock)
    async with app.run_test(size=(120, 40)) as pilot:
        await synced(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = screen_text(app)
        for key in ("p ", "l ", "i ", "P L I ", "r ", "/ ", "enter", "k ", "c ", "space", "tab", "? ", "q "):
            assert f" {key}" in text, key
        assert "one LAN client at a time" in text and "access rules and their hits" in text
        await pilot.press("p")                               # the help screen is modal: no switch
        await pilot.press("escape")
        assert requests(fake, "set_passthrough") == []


RULES = [{"vpn": "pptp", "client": "192.168.77.12", "server": "0.0.0.0/0", "action": "deny"},
         {"vpn": "any", "client": "192.168.77.0/24", "server": "198.51.100.0/24", "action": "allow"}]


def rules_rows(app) -> list[list[str]]:
    """The rows of the rules screen's table, as words, read off the screen."""
    rows = []
    for line in screen_text(app).splitlines():
        inside = line.split("│")
        words = inside[1].split() if len(inside) == 3 else []
        if len(words) == 6 and words[0].isdigit():
            rows.append(words)
    return rows


async def test_r_shows_the_access_rules_and_r_there_reads_them_again(tmp_path):
    sock = str(tmp_path / "ctl.sock")
    with FakeRouter(sock, demo_table(), rules=RULES, default_action="deny") as fake:
        app = make_app(sock)
        async with app.run_test(size=(120, 40)) as pilot:
            await synced(pilot)
            assert "access rules: 2, default deny (r)" in screen_text(app)
            await pilot.press("r")
            assert isinstance(app.screen, RulesScreen)
            await wait_for(pilot, lambda: rules_rows(app), what="the rules")
            assert requests(fake, "rules") == [[]]
            assert "default action: deny" in screen_text(app)
            assert rules_rows(app) == [["1", "pptp", "192.168.77.12/32", "0.0.0.0/0", "deny", "0"],
                                       ["2", "any", "192.168.77.0/24", "198.51.100.0/24", "allow", "0"]]
            assert fake.attempt("pptp", "192.168.77.12", "198.51.100.7") == "denied"
            assert fake.attempt("ipsec", "192.168.77.13", "198.51.100.9") == "allowed"
            assert fake.attempt("ipsec", "192.168.77.13", "198.51.100.9") == "allowed"
            await pilot.press("r")                          # read again: the hits have grown
            await wait_for(pilot, lambda: [row[5] for row in rules_rows(app)] == ["1", "2"])
            assert requests(fake, "rules") == [[], []] and len(app.screen_stack) == 2
            await pilot.press("escape")
            assert not isinstance(app.screen, RulesScreen)
            await wait_for(pilot, lambda: "PPTP: 192.168.77.12 -> 198.51.100.7 denied" in screen_text(app))


async def test_rules_that_cannot_be_read_say_why(sock, fake):
    fake.refuse["rules"] = ("unknown_method", "no method 'rules'")
    app = make_app(sock)
    async with app.run_test(size=(120, 40)) as pilot:
        await synced(pilot)
        await pilot.press("r")
        await wait_for(pilot, lambda: "could not read the rules: no method 'rules'" in screen_text(app))
        assert "reading the rules failed: no method 'rules'" in notifications(app)[-1]
        await pilot.press("q")                              # closes the rules, not the dashboard
        assert app.is_running and not isinstance(app.screen, RulesScreen)


async def test_refused_and_denied_attempts_read_as_sentences_in_the_events(tmp_path):
    sock = str(tmp_path / "ctl.sock")
    modes = {"pptp": "single", "l2tp": "multi", "ipsec": "multi"}
    with FakeRouter(sock, demo_table(), modes=modes, rules=RULES[1:], default_action="deny") as fake:
        app = make_app(sock)
        async with app.run_test(size=(200, 40)) as pilot:
            await synced(pilot)
            assert fake.attempt("pptp", "192.168.77.12", "198.51.100.7") == "refused_single"
            assert fake.attempt("l2tp", "192.168.77.12", "203.0.113.50") == "denied"
            assert fake.attempt("ipsec", "10.0.0.5", "198.51.100.20") == "denied"
            await wait_for(pilot, lambda: len(app.event_log.entries) >= 4)
            text = screen_text(app)
            assert "PPTP: 192.168.77.12 -> 198.51.100.7 refused (single passthrough held by 192.168.77.11)" in text
            assert "L2TP: 192.168.77.12 -> 203.0.113.50 denied by the default action" in text
            assert "IPsec: 10.0.0.5 -> 198.51.100.20 denied by the default action" in text
            assert [e.kind for e in app.event_log.entries][-3:] == ["drop"] * 3


async def test_a_new_profile_shows_its_behaviour_and_says_it_is_for_new_sessions(sock, fake):
    app = make_app(sock)
    async with app.run_test(size=(200, 40)) as pilot:
        await synced(pilot)
        fake.apply_profile("strict")                        # strict also turns passthrough off
        await wait_for(pilot, lambda: "profile strict: APDM/APDF, no hairpinning" in screen_text(app))
        text = screen_text(app)
        assert "NAT profile strict: APDM/APDF, no hairpinning" in text
        assert "applies to new sessions; existing sessions keep the behaviour they were made with" in text
        assert all(f"{title}  OFF " in switch_line(app) for title in ("PPTP", "L2TP", "IPsec"))
        assert len(nat(app).rows) == 13                     # sessions already up stay
        fake.apply_profile("map-e")
        await wait_for(pilot, lambda: "profile map-e: EIM/ADF, hairpinning, port set of 240" in screen_text(app))
        assert " p  PPTP  ON multi" in switch_line(app)


async def test_q_quits(sock, fake):
    app = make_app(sock)
    async with app.run_test(size=(120, 40)) as pilot:
        await synced(pilot)
        await pilot.press("q")
        await pilot.pause(0.1)
        assert not app.is_running
