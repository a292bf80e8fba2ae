"""The state file (router/state.py): a router restored from it goes on where the old one stopped."""

from __future__ import annotations

import pytest
from scapy.layers.inet import TCP, UDP

from frames import C1, C2, C3, LAN, S1, S2, WAN, from_lan, from_wan, make_router, step
from ipsec_frames import ChildSa
from l2tp_frames import data
from pptp_frames import Control, call_up, gre_in, gre_out
from router import state
from test_ipsec import ike_pair
from test_l2tp import LNS_TID, established


def restarted(r, now: float = 5.0, wall: float = 1000.0, down: float = 0.0):
    """A new router that took up ``r``'s state file, written at ``now``; and the time it goes on from."""
    saved = state.load(state.dump(r.config, r.tables(), now, wall), r.config)
    fresh = make_router()
    fresh.restore(saved.tables)
    return fresh, saved.resume_at(wall + down)


def views(r, now: float) -> list[dict]:
    return sorted((i.to_dict() for i in r.session_infos(now)), key=lambda d: d["id"])


def test_every_kind_of_session_carries_on_after_a_restart():
    r = make_router()
    step(r, LAN, from_lan(C1, S1, UDP(sport=5000, dport=53)))
    step(r, LAN, from_lan(C2, S1, TCP(sport=40000, dport=80, flags="S", seq=1)))
    (synack,) = step(r, WAN, from_wan(S1, TCP(sport=80, dport=40000, flags="SA", seq=9, ack=2)))[LAN]
    pptp = Control(r, C1, S1)
    call = call_up(pptp, 0, 128)
    lac = established(r, C2)
    ike = ike_pair(r, C3, 1).float_to_natt()
    natt_child = ChildSa(r, C3, S1, 0xC0000001, 0xD0000001, natt_port=ike.outside_port)
    raw_child = ChildSa(r, C1, S2, 0xC0000002, 0xD0000002)
    for child in (natt_child, raw_child):
        assert child.delivered_out(child.out(b"before", now=3.0)) == b"before"
        assert child.delivered_in(child.into(b"before", now=3.0)) == b"before"
    before = views(r, 5.0)

    b, now = restarted(r)
    assert now == 5.0 and views(b, 5.0) == before         # the same ids, translations, states and counters
    assert [e for e in iter(b.next_event, None)] == []     # nothing new was negotiated or announced
    (reply,) = step(b, WAN, from_wan(S1, UDP(sport=53, dport=5000)), now=6.0)[LAN]
    assert reply[UDP].dport == 5000 and reply.dst == "02:00:00:00:00:11"
    (ack,) = step(b, LAN, from_lan(C2, S1, TCP(sport=40000, dport=80, flags="A", seq=2, ack=10)), now=6.0)[WAN]
    assert ack[TCP].sport == synack[TCP].dport
    assert gre_in(b, S1, call, now=6.0) and gre_out(b, C1, S1, 128, now=6.0)
    lac.r = b
    assert lac.send(data(LNS_TID, 1), now=6.0) and lac.receive(data(lac.translated, 1), now=6.0)
    for child in (natt_child, raw_child):
        child.r = b
        assert child.delivered_out(child.out(b"after", now=6.0)) == b"after"
        assert child.delivered_in(child.into(b"after", now=6.0)) == b"after"
    assert b.counters["drop_gre_no_call"] == b.counters["drop_esp_no_association"] == 0


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
    saved = state.load(state.dump(r.config, r.tables(), 50.0, 1000.0), r.config)
    assert saved.resume_at(900.0) == 50.0


@pytest.mark.parametrize("damage, reason", [
    (lambda d: b"garbage" + d, "not a vpnrouter state file"),
    (lambda d: d[:20], "cut short"),
    (lambda d: d[:-10], "checksum"),
    (lambda d: d[:-1] + bytes([d[-1] ^ 1]), "checksum"),
    (lambda d: d[:16] + (99).to_bytes(4, "big") + d[20:], "format version 99"),
])
def test_a_bad_state_file_is_refused_with_its_reason(damage, reason):
    r = make_router()
    step(r, LAN, from_lan(C1, S1, UDP(sport=5000, dport=53)))
    with pytest.raises(state.StateError, match=reason):
        state.load(damage(state.dump(r.config, r.tables(), 5.0, 1000.0)), r.config)


def test_a_state_file_for_other_addresses_is_refused():
    r = make_router()
    other = make_router(wan={"address": "198.51.100.2/24"})
    with pytest.raises(state.StateError, match="other ports, addresses"):
        state.load(state.dump(r.config, r.tables(), 5.0, 1000.0), other.config)


def test_a_state_file_may_name_no_other_code():
    import hashlib
    import pickle
    body = pickle.dumps({"identity": None, "evil": __import__("os").system})
    data = state.MAGIC + state._HEADER.pack(state.VERSION, hashlib.sha256(body).digest()) + body
    with pytest.raises(state.StateError, match="posix.system is not allowed"):
        state.load(data, make_router().config)
