"""The dashboard's model and views without Textual: snapshot and events, gaps, order, rates, filter, sort."""

from __future__ import annotations

import random

import pytest

from tui import format as fmt
from tui.model import UNKNOWN_RESYNC_INTERVAL, Model
from tui.rates import Rates
from tui.view import Filter, FilterError, TableView

from .samples import DESCRIPTIONS, PROTOCOLS, demo_table, ipsec_sa, nat_session, port_set, pptp_call, profile_nat


def opened(seq, session):
    return {"type": "session_opened", "seq": seq, "session": session}


def closed(seq, session, reason="timeout"):
    return {"type": "session_closed", "seq": seq, "session": session, "reason": reason}


def updated(seq, *briefs):
    return {"type": "sessions_updated", "seq": seq, "sessions": list(briefs)}


def brief(sid, packets_in=0, packets_out=0, bytes_in=0, bytes_out=0, state="active", idle=0.0):
    return {"id": sid, "state": state, "idle": idle, "packets_in": packets_in, "packets_out": packets_out,
            "bytes_in": bytes_in, "bytes_out": bytes_out}


def synced_model(sessions=None, seq=10, now=0.0, helpers=DESCRIPTIONS) -> Model:
    model = Model()
    model.link_up(now)
    model.describe(helpers, now)
    model.subscribed(seq, now)
    model.load_snapshot(demo_table() if sessions is None else sessions, now)
    model.take_changes()
    return model


# -- snapshot and events ----------------------------------------------------------------------------

def test_snapshot_then_events_applied_in_order():
    model = synced_model()
    model.apply_events([opened(10, nat_session(100)), updated(11, brief(100, 500, 600, 50_000, 60_000)),
                        closed(12, nat_session(6))], now=1.0)
    assert 100 in model.sessions and 6 not in model.sessions
    assert (model.sessions[100].packets_in, model.sessions[100].bytes_out) == (500, 60_000)
    assert model.expected == 13 and model.take_resync() is None
    changes = model.take_changes()
    assert changes.added == {100} and changes.removed == {6}


def test_events_older_than_the_subscription_are_skipped():
    model = synced_model(seq=10)
    model.apply_events([opened(8, nat_session(100)), closed(9, nat_session(6))], now=1.0)
    assert 100 not in model.sessions and 6 in model.sessions
    assert model.expected == 10 and model.take_resync() is None


def test_events_read_before_the_snapshot_are_in_it_and_replaced_by_it():
    model = Model()
    model.subscribed(10, 0.0)
    model.apply_events([opened(10, nat_session(100))], now=0.0)        # the table is read after this
    model.load_snapshot([nat_session(100), nat_session(101)], now=0.0)
    model.apply_events([closed(11, nat_session(100))], now=0.1)
    assert set(model.sessions) == {101} and model.take_resync() is None


def test_a_gap_in_seq_asks_for_a_resync_and_the_new_snapshot_replaces_the_table():
    model = synced_model(seq=10)
    model.apply_events([opened(10, nat_session(100)), opened(14, nat_session(101))], now=1.0)
    assert model.take_resync() == "events 11 to 13 lost"
    assert model.take_resync() is None                                  # asked once
    assert model.expected == 15 and 101 in model.sessions               # applied anyway
    model.load_snapshot([nat_session(100), nat_session(101), nat_session(102)], now=2.0)
    assert set(model.sessions) == {100, 101, 102}
    assert model.take_changes().reset


def test_an_event_arriving_after_a_later_one_is_stale():
    model = synced_model(seq=10)
    model.apply_events([opened(10, nat_session(100)), opened(12, nat_session(102)),
                        opened(11, nat_session(101))], now=1.0)
    assert model.take_resync() is not None
    assert 101 not in model.sessions and model.expected == 13


def test_counters_never_go_back():
    model = synced_model([nat_session(100)])
    model.apply_events([updated(10, brief(100, 5000, 6000, 500_000, 600_000))], now=1.0)
    model.apply_events([opened(11, nat_session(100))], now=1.1)         # an older picture of the session
    s = model.sessions[100]
    assert (s.packets_in, s.packets_out, s.bytes_in, s.bytes_out) == (5000, 6000, 500_000, 600_000)


def test_a_late_update_does_not_bring_a_closed_session_back():
    model = synced_model([nat_session(100)])
    model.apply_events([closed(10, nat_session(100)), updated(11, brief(100, 9, 9, 9, 9))], now=1.0)
    assert 100 not in model.sessions and model.take_resync() is None


def test_an_unknown_id_in_an_update_asks_for_a_resync_at_most_every_interval():
    model = synced_model([nat_session(100)])
    model.apply_events([updated(10, brief(555))], now=1.0)
    assert "555" in model.take_resync()
    model.apply_events([updated(11, brief(556))], now=2.0)
    assert model.take_resync() is None
    model.apply_events([updated(12, brief(557))], now=2.0 + UNKNOWN_RESYNC_INTERVAL)
    assert model.take_resync() is not None


def test_age_and_idle_grow_with_time_without_events():
    model = synced_model([nat_session(100, idle=3.0, age=60.0)], now=10.0)
    s = model.sessions[100]
    assert (s.idle(10.0), s.age(10.0)) == (3.0, 60.0)
    assert (s.idle(15.0), s.age(15.0)) == (8.0, 65.0)
    model.apply_events([updated(10, brief(100, 1, 1, 1, 1, idle=0.5))], now=20.0)
    assert s.idle(21.0) == 1.5


def test_vpn_flows_are_counted_per_protocol_and_a_call_down_ends_the_call():
    model = synced_model()
    assert model.flow_counts == {"pptp": 1, "l2tp": 1, "ipsec": 2}
    assert model.nat_count == len(demo_table()) - 4
    model.apply_events([{"type": "vpn", "seq": 10, "vpn": "ipsec", "event": "esp_learned", "id": 3,
                         "esp_spi_in": "deadbeef"},
                        {"type": "vpn", "seq": 11, "vpn": "pptp", "event": "call_down", "id": 1,
                         "reason": "stop"}], now=1.0)
    assert model.sessions[3].fields["esp_spi_in"] == "deadbeef"
    assert 1 not in model.sessions and model.flow_counts["pptp"] == 0
    model.apply_events([opened(12, pptp_call(20, call_id=4))], now=2.0)
    assert model.flow_counts["pptp"] == 1
    assert model.log[-1].kind == "opened"


def test_l2tp_session_events_update_the_tunnels_sessions():
    model = synced_model()
    tunnel = {"vpn": "l2tp", "id": 2, "client": "192.168.77.12", "lns": "198.51.100.8", "tunnel_id": 5,
              "translated_tunnel_id": 5, "peer_tunnel_id": 9}
    model.apply_events([{"type": "vpn", "seq": 10, "event": "session_up", **tunnel, "session_id": 2,
                         "peer_session_id": 8, "state": "established"},
                        {"type": "vpn", "seq": 11, "event": "session_down", **tunnel, "session_id": 1,
                         "peer_session_id": 4, "state": "closed", "reason": "cdn"}], now=1.0)
    assert fmt.protocol_ids(model.sessions[2], PROTOCOLS["l2tp"]) == "tun 5>5<>9 ses 2<>8"
    assert 2 in model.take_changes().replaced


def test_switches_follow_what_the_router_confirms():
    model = synced_model()
    model.apply_status({"uptime": 5.0, "passthrough": {"pptp": True, "l2tp": True, "ipsec": True}}, now=0.0)
    model.pending.add("pptp")
    model.apply_status({"uptime": 6.0, "passthrough": {"pptp": True, "l2tp": True, "ipsec": True}}, now=1.0)
    assert "pptp" in model.pending                 # a status is not the answer
    model.set_switches({"pptp": False, "l2tp": True, "ipsec": True})
    assert model.switches["pptp"] is False and not model.pending
    model.apply_events([{"type": "switch_changed", "seq": 10, "name": "ipsec", "on": False}], now=2.0)
    assert model.switches["ipsec"] is False
    assert "IPsec passthrough off" in model.log[-1].text


def v3_status(modes, holders=None, nat=None, rules=None, uptime=5.0) -> dict:
    return {"uptime": uptime, "passthrough": {name: mode != "off" for name, mode in modes.items()},
            "passthrough_mode": modes, "passthrough_holder": holders or {name: None for name in modes},
            "nat": nat or profile_nat("default"), "rules": rules or {"default_action": "allow", "count": 0}}


def test_a_status_gives_each_switch_its_mode_and_holder_and_the_nat_and_rules():
    model = synced_model()
    model.apply_status(v3_status({"pptp": "single", "l2tp": "multi", "ipsec": "off"},
                                 {"pptp": "192.168.77.11", "l2tp": None, "ipsec": None}, profile_nat("linux"),
                                 {"default_action": "deny", "count": 3}), now=0.0)
    assert [model.switch_mode(name) for name in ("pptp", "l2tp", "ipsec")] == ["single", "multi", "off"]
    assert model.holders == {"pptp": "192.168.77.11", "l2tp": None, "ipsec": None}
    assert model.nat["profile"] == "linux" and model.rules == {"default_action": "deny", "count": 3}


def test_a_switch_is_unknown_before_the_first_status_and_on_without_a_mode_until_one_is_said():
    model = synced_model()
    assert model.switch_mode("pptp") is None
    model.apply_status({"uptime": 5.0, "passthrough": {"pptp": True, "l2tp": False, "ipsec": True}}, now=0.0)
    assert [model.switch_mode(name) for name in ("pptp", "l2tp", "ipsec")] == ["on", "off", "on"]


def test_switch_changed_carries_the_mode_and_only_single_keeps_a_holder():
    model = synced_model()
    model.apply_status(v3_status({"pptp": "single", "l2tp": "single", "ipsec": "multi"},
                                 {"pptp": "192.168.77.11", "l2tp": "192.168.77.12", "ipsec": None}), now=0.0)
    model.pending.add("pptp")
    model.apply_events([{"type": "switch_changed", "seq": 10, "name": "pptp", "on": True, "mode": "multi"},
                        {"type": "switch_changed", "seq": 11, "name": "l2tp", "on": False, "mode": "off"},
                        {"type": "switch_changed", "seq": 12, "name": "ipsec", "on": True, "mode": "single"}],
                       now=1.0)
    assert [model.switch_mode(name) for name in ("pptp", "l2tp", "ipsec")] == ["multi", "off", "single"]
    assert model.holders == {"pptp": None, "l2tp": None, "ipsec": None} and not model.pending
    assert [e.text for e in list(model.log)[-3:]] == [
        "PPTP passthrough on (multi)", "L2TP passthrough off", "IPsec passthrough on (single)"]


SWITCH_ANSWERS = [
    # (mode before, value asked, answer's bool, mode shown after the answer, before any event or status)
    ("multi", "single", True, "single"),
    ("single", "multi", True, "multi"),
    ("single", "off", False, "off"),
    ("off", "single", True, "single"),
    ("off", "on", True, "on"),              # the router brings back a mode: which, its event or status says
    ("multi", "single", False, "off"),      # an answer that disagrees with the value is believed, not the value
]


@pytest.mark.parametrize("before,value,on,after", SWITCH_ANSWERS)
def test_a_set_passthrough_answer_confirms_the_mode_it_named(before, value, on, after):
    model = synced_model()
    model.apply_status(v3_status({"pptp": before, "l2tp": "multi", "ipsec": "multi"}), now=0.0)
    model.pending.add("pptp")
    model.switch_answered("pptp", value, {"pptp": on, "l2tp": True, "ipsec": True})
    assert model.switch_mode("pptp") == after and not model.pending


def test_profile_changed_shows_the_new_behaviour_and_says_whom_it_applies_to():
    model = synced_model()
    model.apply_status(v3_status({"pptp": "multi", "l2tp": "multi", "ipsec": "multi"}), now=0.0)
    model.apply_events([{"type": "profile_changed", "seq": 10, "name": "map-e", "nat": profile_nat("map-e")}],
                       now=1.0)
    assert model.nat["port_set"]["size"] == 240
    assert [(e.kind, e.text) for e in list(model.log)[-2:]] == [
        ("profile", "NAT profile map-e: EIM/ADF, hairpinning, port set of 240"),
        ("profile", "  applies to new sessions; existing sessions keep the behaviour they were made with")]
    assert len(model.sessions) == len(demo_table())                     # sessions up are left as they are


REFUSALS = [
    ({"vpn": "pptp", "event": "refused_single", "client": "192.168.77.12", "server": "198.51.100.7",
      "holder": "192.168.77.11"},
     "PPTP: 192.168.77.12 -> 198.51.100.7 refused (single passthrough held by 192.168.77.11)"),
    ({"vpn": "ipsec", "event": "denied", "client": "192.168.77.12", "server": "198.51.100.20", "rule": 2,
      "action": "deny"},
     "IPsec: 192.168.77.12 -> 198.51.100.20 denied by rule 2"),
    ({"vpn": "l2tp", "event": "denied", "client": "192.168.77.13", "server": "198.51.100.8", "rule": None,
      "action": "deny", "suppressed": 4},
     "L2TP: 192.168.77.13 -> 198.51.100.8 denied by the default action  (+4 not shown)"),
]


@pytest.mark.parametrize("event,text", REFUSALS)
def test_refused_attempts_read_as_sentences_and_are_logged_as_drops(event, text):
    model = synced_model()
    model.apply_events([{"type": "vpn", "seq": 10, **event}], now=1.0)
    assert (model.log[-1].kind, model.log[-1].text) == ("drop", text)


def test_other_vpn_events_keep_their_fields():
    model = synced_model()
    model.apply_events([{"type": "vpn", "seq": 10, "vpn": "ipsec", "event": "esp_ambiguous",
                         "gateway": "198.51.100.9", "spi": "c0ffee01"}], now=1.0)
    assert (model.log[-1].kind, model.log[-1].text) == ("vpn", "IPsec esp_ambiguous gateway=198.51.100.9 spi=c0ffee01")


def test_a_rules_answer_updates_the_rules_in_brief():
    model = synced_model()
    model.rules_read({"default_action": "deny", "rules": [{"index": 1}, {"index": 2}]})
    assert fmt.rules_brief(model.rules) == "access rules: 2, default deny"
    assert fmt.rules_brief({"default_action": "allow", "count": 0}) == "access rules: none, default allow"


def test_drops_are_logged_with_their_reason():
    model = synced_model()
    model.apply_events([{"type": "packet_dropped", "seq": 10, "reason": "passthrough_off", "port": "lan",
                         "summary": "gre 192.168.77.11 > 198.51.100.7", "suppressed": 4}], now=1.0)
    entry = model.log[-1]
    assert entry.kind == "drop" and "passthrough_off" in entry.text and "+4" in entry.text


def test_a_disconnection_keeps_the_table_and_waits_for_a_new_snapshot():
    model = synced_model()
    model.link_down("connection refused", now=5.0)
    assert not model.connected and not model.synced and model.expected is None
    assert len(model.sessions) == len(demo_table())
    assert model.log[-1].text == "disconnected: connection refused"


def test_uptime_is_carried_forward_while_connected():
    model = synced_model()
    model.apply_status({"uptime": 100.0}, now=10.0)
    assert model.router_uptime(12.5) == 102.5
    model.link_down("gone", now=13.0)
    assert model.router_uptime(20.0) == 100.0


# -- rates ------------------------------------------------------------------------------------------

def counters(frames_in_lan=0, bytes_in_lan=0, frames_out_wan=0, bytes_out_wan=0):
    return {"frames_in_lan": frames_in_lan, "bytes_in_lan": bytes_in_lan, "frames_out_wan": frames_out_wan,
            "bytes_out_wan": bytes_out_wan}


def test_rates_are_counter_differences_over_the_routers_uptime():
    rates = Rates()
    rates.sample(counters(1000, 100_000, 500, 60_000), uptime=10.0)
    assert rates.current["lan"]["pps_in"] is None
    rates.sample(counters(3000, 300_000, 1500, 160_000), uptime=12.0)
    assert rates.current["lan"]["pps_in"] == 1000.0 and rates.current["lan"]["bps_in"] == 100_000.0
    assert rates.current["wan"]["pps_out"] == 500.0 and rates.current["wan"]["bps_out"] == 50_000.0
    assert rates.current["wan"]["pps_in"] == 0.0
    rates.sample(counters(3000, 300_000, 1500, 160_000), uptime=12.0)  # the same reading again: no sample
    assert list(rates.history["lan"]["pps_in"]) == [1000.0]


def test_a_router_restart_starts_the_rates_again():
    rates = Rates()
    rates.sample(counters(1000), uptime=100.0)
    rates.sample(counters(2000), uptime=101.0)
    rates.sample(counters(10), uptime=1.0)                              # restarted: uptime went back
    assert rates.current["lan"]["pps_in"] is None and not rates.history["lan"]["pps_in"]
    rates.sample(counters(110), uptime=2.0)
    assert rates.current["lan"]["pps_in"] == 100.0


# -- filter and order -------------------------------------------------------------------------------

FILTER_TABLE = [
    # (filter, session, matches)
    ("udp", nat_session(1, "udp"), True),
    ("tcp", nat_session(1, "udp"), False),
    ("proto=udp", nat_session(1, "udp"), True),
    ("proto=ud", nat_session(1, "udp"), False),
    ("proto:ud", nat_session(1, "udp"), True),
    ("proto!=udp", nat_session(1, "udp"), False),
    ("!proto=udp", nat_session(1, "udp"), False),
    ("remote:8.8.", nat_session(1, remote="8.8.8.8:53"), True),
    ("inside:192.168.77.11 state=established", nat_session(1, "tcp", inside="192.168.77.11:4000"), True),
    ("state:est", nat_session(1, "udp"), False),
    ("idle>5", nat_session(1, idle=6.0), True),
    ("idle>1m", nat_session(1, idle=6.0), False),
    ("age<=2h", nat_session(1, age=7200.0), True),
    ("bytes>1k", nat_session(1, bytes_in=600, bytes_out=600), True),
    ("bytes>1.5k", nat_session(1, bytes_in=600, bytes_out=600), False),
    ("packets=10", nat_session(1, packets_in=4, packets_out=6), True),
    ("id=7", nat_session(7), True),
    ("vpn=pptp", nat_session(1, vpn="pptp"), True),
    ("vpn=pptp", nat_session(1), False),
]


@pytest.mark.parametrize("text,session,expected", FILTER_TABLE)
def test_filter(text, session, expected):
    model = synced_model([session], now=0.0)
    assert Filter(text).matches(model.sessions[session["id"]], now=0.0) is expected


@pytest.mark.parametrize("text", ["colour:red", "idle>soon", "bytes>1X", "proto>3", "!"])
def test_a_filter_that_cannot_be_read_says_why(text):
    with pytest.raises(FilterError):
        Filter(text)


def test_order_kept_by_key_equals_a_full_sort_through_random_changes():
    rng = random.Random(7)
    model = synced_model([nat_session(i, seed=rng.randrange(1000)) for i in range(1, 400)])
    for sort in ("bytes", "remote", "idle", "state"):
        view, seq = TableView(lambda s: not s.flow, sort=sort), model.expected
        view.set_filter("!proto=icmp")
        view.update(model.sessions, model.take_changes(), now=0.0)
        for step in range(30):
            events = []
            for _ in range(rng.randrange(1, 12)):
                sid, kind = rng.randrange(1, 600), rng.random()
                if kind < 0.3:
                    events.append(opened(seq, nat_session(sid, rng.choice(["udp", "tcp", "icmp"]),
                                                          seed=rng.randrange(1000))))
                elif kind < 0.5:
                    events.append(closed(seq, nat_session(sid)))
                else:
                    ids = rng.sample(list(model.sessions), min(5, len(model.sessions)))
                    events.append(updated(seq, *[brief(i, *(rng.randrange(10**6) for _ in range(4)),
                                                       idle=rng.random() * 30) for i in ids]))
                seq += 1
            model.apply_events(events, now=float(step))
            view.update(model.sessions, model.take_changes(), now=float(step))
            expected = TableView(lambda s: not s.flow, sort=sort)
            expected.set_filter("!proto=icmp")
            expected.rebuild(model.sessions, now=float(step))
            assert view.rows == expected.rows, (sort, step)


def test_sorting_by_bytes_moves_a_changed_row_and_reverse_turns_the_order():
    model = synced_model([nat_session(i, bytes_in=i * 10, bytes_out=0) for i in range(1, 6)])
    view = TableView(lambda s: True, sort="bytes")
    view.update(model.sessions, model.take_changes(), now=0.0)
    assert view.rows == [1, 2, 3, 4, 5]
    model.apply_events([updated(10, brief(2, bytes_in=1000))], now=1.0)
    assert view.update(model.sessions, model.take_changes(), now=1.0)
    assert view.rows == [1, 3, 4, 5, 2]
    view.set_sort("bytes")                              # the same column again: reversed
    view.update(model.sessions, model.take_changes(), now=1.0)
    assert view.rows == [2, 5, 4, 3, 1]


def test_vpn_flows_are_not_nat_sessions():
    model = synced_model()
    view = TableView(lambda s: not s.flow)
    view.update(model.sessions, model.take_changes(), now=0.0)
    assert 1 not in view.rows and 5 in view.rows        # a PPTP call is a flow; its TCP 1723 session is NAT


# -- formatting -------------------------------------------------------------------------------------

@pytest.mark.parametrize("n,text", [(0, "0"), (999, "999"), (1000, "1k"), (1234, "1.23k"), (12_345, "12.3k"),
                                    (123_456, "123k"), (999_600, "1M"), (4_500_000_000, "4.5G"), (2.5, "2.5")])
def test_human(n, text):
    assert fmt.human(n) == text


@pytest.mark.parametrize("seconds,text", [(5, "5s"), (65, "1m05"), (7380, "2h03"), (4 * 86400 + 7200, "4d02")])
def test_duration(seconds, text):
    assert fmt.duration(seconds) == text


NAT_BRIEFS = [
    (profile_nat("default"), "profile default: EIM/ADF, hairpinning"),
    (profile_nat("strict"), "profile strict: APDM/APDF, no hairpinning"),
    (profile_nat("map-e"), "profile map-e: EIM/ADF, hairpinning, port set of 240"),
    ({**profile_nat("linux"), "overrides": ["hairpinning"], "hairpinning": True},
     "profile linux (changed): EIM/APDF, hairpinning"),
    ({**profile_nat("default"), "profile": None, "mapping": "address-dependent",
      "port_set": port_set(6, 6, 5)}, "profile custom: ADM/ADF, hairpinning, port set of 1,008"),
]


@pytest.mark.parametrize("nat,text", NAT_BRIEFS)
def test_nat_brief(nat, text):
    assert fmt.nat_brief(nat) == text


def test_protocol_ids_of_each_vpn():
    model = synced_model()
    pptp, l2tp, ipsec = (PROTOCOLS[name] for name in ("pptp", "l2tp", "ipsec"))
    assert fmt.protocol_ids(model.sessions[1], pptp) == "call 0>17<>33"
    assert fmt.protocol_ids(model.sessions[2], l2tp) == "tun 5>5<>9 ses 1<>4"
    assert fmt.protocol_ids(model.sessions[3], ipsec) == "NAT-T ESP c0ffee01/0badf00d IKE 11223344…/99aabbcc…"
    assert fmt.vpn_cells(model.sessions[4], 0.0, ipsec)[5] == "!"              # ambiguous
    multi = synced_model([dict(ipsec_sa(9), esp_spi_in=["0badf00d", "feedf00d"])])
    assert "ESP c0ffee01/0badf00d,feedf00d" in fmt.protocol_ids(multi.sessions[9], ipsec)
