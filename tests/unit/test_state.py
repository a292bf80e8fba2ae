"""The state file (router/state.py): a router restored from it goes on where the old one stopped, takes up only
records that make sense, runs nothing a file names, and blocks no new flow with what it restored."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import pickle
import random
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether

from tests.unit.frames import (C1, C2, C3, GW, LAN, LAN_IP, LAN_MAC, S1, S2, WAN, config, drain, from_lan, from_wan,
                               learn, make_router, step, wire)
from tests.unit.ipsec_frames import ChildSa
from tests.unit.l2tp_frames import data
from tests.unit.pptp_frames import Control, call_up, gre_in, gre_out
from router import state
from router.config import parse
from router.dataplane.router import Router
from router.helpers.registry import build_helpers
from router.packet.frame import ip_int
from tests.unit.test_ipsec import ike_pair
from tests.unit.test_l2tp import LNS_TID, established

DATA = Path(__file__).parents[1] / "data"
GOLDEN = DATA / "state-v2.state"
GOLDEN_VIEWS = DATA / "state-v2.sessions.json"
VIEW_FIELDS = ("id", "proto", "inside", "outside", "remote", "state", "vpn", "packets_in", "packets_out",
               "bytes_in", "bytes_out")


def written(r, now: float = 5.0, wall: float = 1000.0) -> bytes:
    return state.dump(r.config, r.state_records(), now, wall, "test")


def restarted(r, now: float = 5.0, wall: float = 1000.0, down: float = 0.0, **sections):
    """A new router that took up ``r``'s state file, written at ``now``; and the time it goes on from."""
    saved = state.load(written(r, now, wall), r.config)
    fresh = make_router(**sections)
    fresh.restore(saved.records, saved.clock)
    return fresh, saved.resume_at(wall + down)


def views(r, now: float) -> list[dict]:
    return sorted((i.to_dict() for i in r.session_infos(now)), key=lambda d: d["id"])


def busy_router():
    """A router with every kind of session and VPN flow, traffic through each; and the objects driving them."""
    r = make_router()
    step(r, LAN, from_lan(C1, S1, UDP(sport=5000, dport=53)))
    step(r, LAN, from_lan(C2, S1, TCP(sport=40000, dport=80, flags="S", seq=1)))
    (synack,) = step(r, WAN, from_wan(S1, TCP(sport=80, dport=40000, flags="SA", seq=9, ack=2)))[LAN]
    step(r, LAN, from_lan(C3, S2, ICMP(type=8, id=77)))
    pptp = Control(r, C1, S1)
    call = call_up(pptp, 0, 128)
    lac = established(r, C2)
    ike = ike_pair(r, C3, 1).float_to_natt()
    assert ike.send(now=2.0) and ike.answer(now=2.0)
    natt_child = ChildSa(r, C3, S1, 0xC0000001, 0xD0000001, natt_port=ike.outside_port)
    raw_child = ChildSa(r, C1, S2, 0xC0000002, 0xD0000002)
    for child in (natt_child, raw_child):
        assert child.delivered_out(child.out(b"before", now=3.0)) == b"before"
        assert child.delivered_in(child.into(b"before", now=3.0)) == b"before"
    return r, {"synack": synack, "call": call, "lac": lac, "children": (natt_child, raw_child)}


def test_every_kind_of_session_carries_on_after_a_restart():
    r, peers = busy_router()
    before = views(r, 5.0)

    b, now = restarted(r)
    assert now == 5.0 and views(b, 5.0) == before         # the same ids, translations, states and counters
    assert [e for e in iter(b.next_event, None)] == []     # nothing new was negotiated or announced
    (reply,) = step(b, WAN, from_wan(S1, UDP(sport=53, dport=5000)), now=6.0)[LAN]
    assert reply[UDP].dport == 5000 and reply.dst == "02:00:00:00:00:11"
    (ack,) = step(b, LAN, from_lan(C2, S1, TCP(sport=40000, dport=80, flags="A", seq=2, ack=10)), now=6.0)[WAN]
    assert ack[TCP].sport == peers["synack"][TCP].dport
    assert gre_in(b, S1, peers["call"], now=6.0) and gre_out(b, C1, S1, 128, now=6.0)
    lac = peers["lac"]
    lac.r = b
    assert lac.send(data(LNS_TID, 1), now=6.0) and lac.receive(data(lac.translated, 1), now=6.0)
    for child in peers["children"]:
        child.r = b
        assert child.delivered_out(child.out(b"after", now=6.0)) == b"after"
        assert child.delivered_in(child.into(b"after", now=6.0)) == b"after"
    assert b.counters["drop_gre_no_call"] == b.counters["drop_esp_no_association"] == 0
    assert next_id(b) == next_id(r)


def next_id(r) -> int:
    return r.state_records()["next_id"]


def test_the_tally_counts_each_kind_and_a_restored_router_writes_the_same_records():
    r, _ = busy_router()
    b, _ = restarted(r)
    saved = state.load(written(r), r.config)
    tally = make_router().restore(saved.records, saved.clock)
    assert dict(tally.counts) == {"mapping": 7, "session": 7, "pptp call": 1, "l2tp tunnel": 1,
                                  "ipsec association": 2}
    assert not tally.dropped
    assert _plain(b.state_records()) == _plain(r.state_records())


def _plain(records: dict):
    """Records as a file holds them, order of the mappings aside."""
    plain = msgpack.unpackb(msgpack.packb(records), raw=False)
    plain["mappings"].sort(key=lambda m: (m["proto"], m["inside_ip"], m["inside_port"]))
    return plain


def test_downtime_counts_as_idle_time():
    r = make_router(timeouts={"udp": 300})
    step(r, LAN, from_lan(C1, S1, UDP(sport=5000, dport=53)), now=1.0)
    step(r, LAN, from_lan(C2, S1, UDP(sport=5001, dport=53)), now=200.0)
    b, now = restarted(r, now=250.0, wall=10_000.0, down=100.0)       # down 100 s: C1's flow idle 349 s
    assert now == 350.0
    b.handle_timer(now)
    assert [s["inside"] for s in views(b, now)] == [f"{C2}:5001"]      # 150 s idle: still there


def test_a_wall_clock_that_went_back_counts_no_downtime():
    r = make_router()
    saved = state.load(written(r, 50.0, 1000.0), r.config)
    assert saved.resume_at(900.0) == 50.0


def test_this_configurations_timeouts_apply_to_what_is_restored():
    r = make_router()
    step(r, LAN, from_lan(C1, S1, UDP(sport=5000, dport=53)), now=1.0)
    b, _ = restarted(r, timeouts={"udp": 20})
    b.handle_timer(22.0)
    assert views(b, 22.0) == []


# -- files refused whole, in one line -------------------------------------------------------------------------

def _with_body(body: bytes, version: int = state.VERSION) -> bytes:
    return state.MAGIC + state._HEADER.pack(version, hashlib.sha256(body).digest()) + body


@pytest.mark.parametrize("damage, reason", [
    (lambda d: b"garbage" + d, "not a vpnrouter state file"),
    (lambda d: d[:20], "cut short"),
    (lambda d: d[:-10], "checksum"),
    (lambda d: d[:-1] + bytes([d[-1] ^ 1]), "checksum"),
    (lambda d: d[:16] + (99).to_bytes(4, "big") + d[20:], "format version 99, written by a newer vpnrouter"),
    (lambda d: d[:16] + (1).to_bytes(4, "big") + d[20:], "format version 1, from an older vpnrouter, is no longer"),
    (lambda d: _with_body(msgpack.packb([1, 2, 3])), "not the layout of a state file"),
    (lambda d: _with_body(msgpack.packb({"clock": "x", "written": 1, "identity": {}, "records": {}})), "layout"),
    (lambda d: _with_body(msgpack.packb({"clock": 1}) + b"more"), "unreadable: ExtraData"),
    (lambda d: _with_body(msgpack.packb(msgpack.ExtType(5, b"x"))), "extension type 5"),
    (lambda d: _with_body(b"\x91" * 5000 + b"\x00"), "unreadable"),
])
def test_a_bad_state_file_is_refused_with_its_reason(damage, reason):
    r = make_router()
    step(r, LAN, from_lan(C1, S1, UDP(sport=5000, dport=53)))
    with pytest.raises(state.StateError, match=reason) as refused:
        state.load(damage(written(r)), r.config)
    assert "\n" not in str(refused.value)


def test_a_state_file_for_other_addresses_is_refused():
    r = make_router()
    other = make_router(wan={"address": "198.51.100.2/24"})
    with pytest.raises(state.StateError, match="other ports, addresses"):
        state.load(written(r), other.config)


PICKLE_PAYLOAD = (pickle.PROTO + bytes([4]) + pickle.SHORT_BINUNICODE + bytes([19]) + b"router.runtime.loop"
                  + pickle.SHORT_BINUNICODE + bytes([9]) + b"os.getcwd" + pickle.STACK_GLOBAL
                  + pickle.EMPTY_TUPLE + pickle.REDUCE + pickle.STOP)
"""The planted file of issue 17: protocol 4 resolves the dotted name, and REDUCE calls ``os.getcwd()``."""


@pytest.mark.parametrize("version", [1, state.VERSION])
def test_a_planted_pickle_runs_nothing(monkeypatch, version):
    calls = []
    monkeypatch.setattr(os, "getcwd", lambda: calls.append("getcwd") or "/")
    assert pickle.loads(PICKLE_PAYLOAD) == "/" and calls == ["getcwd"]     # a live payload, for pickle
    calls.clear()
    with pytest.raises(state.StateError, match="no longer read" if version == 1 else "unreadable"):
        state.load(_with_body(PICKLE_PAYLOAD, version), make_router().config)
    assert calls == []


# -- records that make no sense: left out and counted, the rest taken up ------------------------------------------

def file_records(r) -> dict:
    """``r``'s records as a state file gives them back."""
    return state.read(written(r)).records


def mapping_of(records: dict, proto: int, inside_port: int) -> dict:
    return next(m for m in records["mappings"] if m["proto"] == proto and m["inside_port"] == inside_port)


def udp_5000(records):
    return mapping_of(records, 17, 5000)


def tcp_40000(records):
    return mapping_of(records, 6, 40000)


def _set(path, value):
    def change(records):
        *where, key = path(records)
        where[-1][key] = value
    return change


def _append_copy(pick, **changes):
    def change(records):
        item = copy.deepcopy(pick(records))
        item.update(changes)
        records["mappings"].append(item)
    return change


def _session_copy(**changes):
    def change(records):
        mapping = udp_5000(records)
        mapping["sessions"].append({**copy.deepcopy(mapping["sessions"][0]), **changes})
    return change


WILD = {
    "port out of range": (_set(lambda r: (udp_5000(r), "inside_port"), 70000), "mapping", "inside_port 70000"),
    "text for a number": (_set(lambda r: (udp_5000(r), "outside_port"), "53"), "mapping", "outside_port '53'"),
    "inside host off the LAN": (_set(lambda r: (udp_5000(r), "inside_ip"), 0xC6336414), "mapping",
                                "198.51.100.20 is not a host on the LAN"),
    "the router's own address": (_set(lambda r: (udp_5000(r), "inside_ip"), 0xC0A84D01), "mapping",
                                 "192.168.77.1 is not a host"),
    "no protocol with ports": (_set(lambda r: (udp_5000(r), "proto"), 47), "mapping", "protocol 47"),
    "a mapping twice": (_append_copy(udp_5000), "mapping", "mapped twice"),
    "an outside port twice": (_append_copy(udp_5000, inside_port=5001), "mapping", "port 5000 taken twice"),
    "a mapping that is not a map": (lambda r: r["mappings"].append(7), "mapping", "not a map"),
    "a forward no longer configured": (_append_copy(udp_5000, static=True, inside_port=9), "mapping",
                                       "no longer configured"),
    "remote on the LAN": (_set(lambda r: (udp_5000(r)["sessions"][0], "remote_ip"), 0xC0A84D0D), "session",
                          "not a remote unicast address"),
    "remote multicast": (_set(lambda r: (udp_5000(r)["sessions"][0], "remote_ip"), 0xE0000001), "session",
                         "224.0.0.1 is not a remote unicast"),
    "an id twice": (_session_copy(remote_port=54), "session", "used twice"),
    "a flow twice": (_session_copy(id=10_000), "session", "the same flow twice"),
    "seen after it was written": (_set(lambda r: (tcp_40000(r)["sessions"][0], "last_seen"), 99.0), "session",
                                  "after the file was written"),
    "seen before made": (_set(lambda r: (tcp_40000(r)["sessions"][0], "created"), 4.5), "session",
                         "last_seen is before created"),
    "negative counters": (_set(lambda r: (tcp_40000(r)["sessions"][0], "packets_in"), -1), "session",
                          "packets_in -1"),
    "a TCP state of no one": (_set(lambda r: (tcp_40000(r)["sessions"][0], "tcp_state"), "bogus"), "session",
                              "tcp_state 'bogus'"),
    "a VPN of no one": (_set(lambda r: (udp_5000(r)["sessions"][0], "vpn"), "toy"), "session", "no VPN helper"),
    "a VPN on another's ports": (_set(lambda r: (udp_5000(r)["sessions"][0], "vpn"), "pptp"), "session",
                                 "its ports are not pptp's"),
    "a tunnel off the LAN": (_set(lambda r: (r["flows"]["l2tp"][0], "inside_ip"), 0xC6336414), "l2tp tunnel",
                             "not a host on the LAN"),
    "a tunnel ID of 0": (_set(lambda r: (r["flows"]["l2tp"][0], "tunnel_id"), 0), "l2tp tunnel", "tunnel_id 0"),
    "an SPI of 0": (_set(lambda r: (r["flows"]["ipsec"][0], "esp_out"), [[0, 1.0]]), "ipsec association",
                    "an SPI is not"),
    "an IKE SPI of 3 bytes": (_set(lambda r: (r["flows"]["ipsec"][0], "ike_sas"), [[b"abc", bytes(8), True]]),
                              "ipsec association", "an IKE SA is not"),
    "a flow of no helper": (_set(lambda r: (r["flows"], "toy"), [{"id": 1}]), "toy flow", "no VPN helper"),
}


@pytest.mark.parametrize("case", list(WILD))
def test_a_record_that_makes_no_sense_is_left_out_with_its_reason(case):
    change, kind, reason = WILD[case]
    r, _ = busy_router()
    records = file_records(r)
    whole = make_router().restore(copy.deepcopy(records), 5.0)
    change(records)
    b = make_router()
    tally = b.restore(records, 5.0)
    left_out = [(k, why) for (k, why), n in tally.dropped.items()]
    assert any(k == kind and reason in why for k, why in left_out), left_out
    assert sum(tally.counts.values()) >= sum(whole.counts.values()) - 3      # the rest was taken up
    assert [e for e in iter(b.next_event, None)] == []


def test_a_pptp_call_that_makes_no_sense_is_left_out_and_its_control_connection_kept():
    r, _ = busy_router()
    records = file_records(r)
    control = next(s for m in records["mappings"] for s in m["sessions"] if s.get("vpn") == "pptp")
    control["helper"]["calls"][0]["call_state"] = "bogus"
    tally = make_router().restore(records, 5.0)
    assert tally.dropped == {("pptp call", "call_state 'bogus' is not one of requested, established, clearing"): 1}
    assert tally.counts["session"] == 7


def test_unknown_fields_are_ignored_and_missing_ones_take_defaults():
    r, _ = busy_router()
    records = file_records(r)
    records["colour"] = "blue"
    for mapping in records["mappings"]:
        mapping["colour"] = "blue"
        del mapping["filtering"]
        for session in mapping["sessions"]:
            for key in ("packets_in", "packets_out", "bytes_in", "bytes_out", "last_seen"):
                session.pop(key, None)
    b = make_router()
    tally = b.restore(records, 5.0)
    assert not tally.dropped and tally.counts["session"] == 7
    tcp = next(s for s in views(b, 5.0) if s["proto"] == "tcp" and s["inside"].endswith(":40000"))
    assert (tcp["packets_in"], tcp["idle"], tcp["age"]) == (0, 4.0, 4.0)   # last_seen: when it was made


def test_sessions_beyond_the_limits_are_left_out():
    r = make_router()
    for port in range(5000, 5010):
        step(r, LAN, from_lan(C1, S1, UDP(sport=port, dport=53)))
    saved = state.load(written(r), r.config)
    b = make_router(limits={"sessions_per_host": 4})
    tally = b.restore(saved.records, saved.clock)
    assert tally.counts["session"] == 4 and tally.dropped[("session", "beyond the session limits")] == 6


def test_a_port_outside_a_new_port_set_is_left_out():
    r = make_router()
    step(r, LAN, from_lan(C1, S1, UDP(sport=5000, dport=53)))
    step(r, LAN, from_lan(C1, S1, UDP(sport=1232, dport=53)))
    saved = state.load(written(r), r.config)
    b = make_router(nat={"port_set": {"offset": 6, "psid_length": 8, "psid": 0x34}})   # RFC 7599 A: 1232-1235...
    tally = b.restore(saved.records, saved.clock)
    assert [s["outside"] for s in views(b, 5.0)] == ["198.51.100.1:1232"]
    assert tally.dropped == {("mapping", "outside port 5000 is not in the port set"): 1}


def test_a_vpn_whose_passthrough_is_now_off_is_left_out():
    r, _ = busy_router()
    saved = state.load(written(r), r.config)
    b = make_router(passthrough={"ipsec": False})
    tally = b.restore(saved.records, saved.clock)
    assert tally.dropped == {("session", "ipsec passthrough is off"): 2,
                             ("ipsec association", "ipsec passthrough is off"): 2,
                             ("mapping", "none of its sessions could be restored"): 2}
    assert {s.get("vpn") for s in views(b, 5.0)} == {None, "pptp", "l2tp"}


WILD_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 63), 2 ** 64 - 1),
                        st.integers(-3, 70000), st.floats(), st.text(max_size=6), st.binary(max_size=9),
                        st.lists(st.integers(0, 2 ** 32), max_size=3),
                        st.dictionaries(st.text(max_size=3), st.integers(-(2 ** 63), 2 ** 63), max_size=2))


def _leaves(value, path=()):
    """(path, value) of every leaf and container in a records tree."""
    yield path, value
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        yield from _leaves(item, (*path, key))


@settings(max_examples=int(os.environ.get("VPNROUTER_FUZZ_EXAMPLES", "120")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_no_records_however_wild_break_a_restore_or_leave_anything_behind(data):
    """Fields replaced by anything MessagePack holds, removed, or their record repeated: the restore never
    raises, the tables stay within their limits, and once every timeout has passed nothing is left."""
    from tests.fuzz.program import Checker, check_bounds
    records = file_records(BUSY[0])
    for _ in range(data.draw(st.integers(1, 6))):
        paths = [path for path, _ in _leaves(records) if path]
        if not paths:
            break
        path = data.draw(st.sampled_from(paths))
        *where, key = path
        parent = records
        for step_ in where:
            parent = parent[step_]
        how = data.draw(st.sampled_from(("replace", "remove", "repeat")))
        if how == "replace":
            parent[key] = data.draw(WILD_VALUES)
        elif isinstance(parent, dict):
            parent.pop(key)
        elif how == "repeat":
            parent.append(copy.deepcopy(parent[key]))
        else:
            del parent[key]
    body = msgpack.packb({"identity": state.identity(BUSY[0].config), "clock": 5.0, "written": 1000.0,
                          "records": records}, use_bin_type=True)
    b = make_router()
    b.restore(state.read(_with_body(body)).records, 5.0)
    check_bounds(b)
    Checker(b).finish(5.0)


BUSY = busy_router()
"""One busy router for the property test to take records from (building it takes a while)."""


# -- the golden file: what this version wrote, every later version reads ---------------------------------------------

def golden_router():
    """The router whose state is tests/data/state-v2.state (``python tests/unit/test_state.py`` writes it)."""
    return busy_router()[0]


def test_the_golden_state_file_of_format_version_2_is_read():
    saved = state.load(GOLDEN.read_bytes(), make_router().config)
    b = make_router()
    tally = b.restore(saved.records, saved.clock)
    assert not tally.dropped
    expected = json.loads(GOLDEN_VIEWS.read_text())
    assert [{k: v.get(k) for k in VIEW_FIELDS} for v in views(b, saved.clock)] == expected
    assert saved.writer["python"] == "3.11.2"


# -- neighbours are resolved again, and a restored session never blocks a new one ----------------------------------

def cold_router(r, wall: float = 1000.0, **sections) -> Router:
    """What `vpnrouter run` does after a restart: a new router, the state taken up, then started; it knows no
    neighbour. Its first frames: the gratuitous ARPs, and a request for each restored LAN host (still in its
    outbox). The WAN's hosts then make themselves known; the LAN's are left to the test."""
    saved = state.load(written(r, wall=wall), r.config)
    cfg = parse(config(**sections))
    b = Router(cfg, build_helpers(cfg), rng=random.Random(2))
    b.restore(saved.records, saved.clock)
    b.start(saved.clock)
    lan_frames = b.take_outbox(LAN)
    for ip in (S1, S2, GW):
        learn(b, WAN, ip, saved.clock)
    b.outbox[LAN].extend(lan_frames)
    return b


def arp_requests(frames) -> list[str]:
    return [f[ARP].pdst for f in frames if ARP in f and f[ARP].op == 1 and f[ARP].pdst != f[ARP].psrc]


def arp_reply(host: str, mac: str) -> bytearray:
    return wire(Ether(src=mac, dst=LAN_MAC) / ARP(op=2, hwsrc=mac, psrc=host, hwdst=LAN_MAC, pdst=LAN_IP))


def test_no_neighbour_is_restored_a_host_whose_mac_changed_gets_its_first_frame():
    r = make_router()
    step(r, LAN, from_lan(C1, S1, UDP(sport=5000, dport=53)))
    b = cold_router(r)
    assert arp_requests(drain(b)[LAN]) == [C1]
    assert step(b, WAN, from_wan(S1, UDP(sport=53, dport=5000) / b"first"), now=5.5)[LAN] == []   # held
    new_mac = "02:00:00:00:99:11"
    b.receive_frame(LAN, arp_reply(C1, new_mac), 5.6)
    (first,) = drain(b)[LAN]
    assert (first.dst, first[UDP].dport, bytes(first[UDP].payload)) == (new_mac, 5000, b"first")


def test_a_gateway_that_speaks_first_after_the_restart_reaches_its_client():
    r, peers = busy_router()
    b = cold_router(r)
    drain(b)
    natt_child, raw_child = peers["children"]
    for child in (natt_child, raw_child):
        child.r = b
        assert child.into(b"ping", now=5.5) == []       # held until the client answers ARP
    for host in (C1, C3):
        b.receive_frame(LAN, arp_reply(host, f"02:00:00:00:aa:{host[-2:]}"), 5.6)
    delivered = drain(b)[LAN]
    assert sorted((f.dst, f[IP].dst) for f in delivered) == [("02:00:00:00:aa:11", C1), ("02:00:00:00:aa:13", C3)]
    assert raw_child.delivered_in(delivered[:1]) == b"ping" and natt_child.delivered_in(delivered[1:]) == b"ping"


def test_a_restored_mapping_of_a_host_that_answers_no_more_gives_way_to_a_new_flow():
    r = make_router()
    step(r, LAN, from_lan(C1, S1, UDP(sport=5000, dport=53)))
    b = cold_router(r)
    drain(b)
    (early,) = step(b, LAN, from_lan(C2, S1, UDP(sport=5000, dport=53)), now=5.1)[WAN]
    assert early[UDP].sport != 5000                      # C1 may still answer: its port is its own
    for now in (6.1, 7.1, 8.1):
        b.handle_timer(now)
    assert b.nat.gone_hosts == {ip_int(C1)}              # three requests, no answer
    (late,) = step(b, LAN, from_lan(C3, S1, UDP(sport=5000, dport=53)), now=8.5)[WAN]
    assert late[UDP].sport == 5000                       # as a new flow would get it
    b.report_closed(8.5)                                 # as the runtime does after each wake-up
    closed = [e for e in iter(b.next_event, None) if type(e).__name__ == "SessionClosed"]
    assert [(e.session.inside, e.reason) for e in closed] == [(f"{C1}:5000", "host_gone")]


def test_a_host_that_answers_keeps_its_restored_mappings():
    r = make_router()
    step(r, LAN, from_lan(C1, S1, UDP(sport=5000, dport=53)))
    b = cold_router(r)
    drain(b)
    b.receive_frame(LAN, arp_reply(C1, "02:00:00:00:00:11"), 5.2)
    for now in (6.1, 7.1, 8.1):
        b.handle_timer(now)
    assert not b.nat.gone_hosts
    (other,) = step(b, LAN, from_lan(C2, S1, UDP(sport=5000, dport=53)), now=8.5)[WAN]
    assert other[UDP].sport != 5000


def test_single_passthrough_held_by_a_host_that_answers_no_more_goes_to_the_next_client():
    r = make_router(passthrough={"pptp": "single"})
    Control(r, C1, S1)
    b = cold_router(r, passthrough={"pptp": "single"})
    drain(b)
    assert b.status(5.0)["passthrough_holder"]["pptp"] == C1
    for now in (6.1, 7.1, 8.1):
        b.handle_timer(now)
    learn(b, LAN, C2, 8.4)
    Control(b, C2, S1, now=8.5)
    assert b.status(8.5)["passthrough_holder"]["pptp"] == C2
    assert b.counters["drop_refused_single"] == 0


def test_state_show_reads_a_file_as_a_restart_would(tmp_path, capsys):
    from router.cli import main
    r, _ = busy_router()
    path = tmp_path / "router.state"
    path.write_bytes(written(r))
    assert main(["state", "show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "format      version 2" in out and "restored 7 mappings, 7 sessions, 2 ipsec associations, 1 l2tp tunnel, 1 pptp call" in out
    assert f"{C2}:40000" in out
    assert main(["state", "show", str(path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["counts"]["session"] == 7 and len(shown["sessions"]) == len(views(r, 5.0))
    assert shown["identity"]["lan"]["address"] == "192.168.77.1/24"
    path.write_bytes(b"nonsense")
    assert main(["state", "show", str(path)]) == 1
    assert capsys.readouterr().err.strip() == f"vpnrouter state: {path}: not a vpnrouter state file"


def test_version_names_the_python_that_runs(capsys, monkeypatch):
    from router.cli import main
    monkeypatch.setenv("COLUMNS", "40")                 # a narrow terminal, or a long path: one line still
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip().endswith("on CPython 3.11.2 (" + __import__("sys").executable
                                                    + ", from /usr)")


if __name__ == "__main__":
    # Writes the golden file, only when the format version changes on purpose:
    # PYTHONPATH=. .venv/bin/python tests/unit/test_state.py
    golden = golden_router()
    GOLDEN.write_bytes(written(golden))
    GOLDEN_VIEWS.write_text(json.dumps([{k: v.get(k) for k in VIEW_FIELDS} for v in views(golden, 5.0)], indent=1) + "\n")
    print(f"wrote {GOLDEN} and {GOLDEN_VIEWS}")
