"""The passthrough helper interface: attach by ports, see packets before translation, drop, describe, close."""

from scapy.layers.inet import IP, UDP

from frames import C1, LAN, S1, WAN, WAN_IP, from_lan, from_wan, make_router, step
from router.helpers.base import Verdict


class RecordingHelper:
    name = "l2tp"

    def __init__(self):
        self.seen, self.closed_sessions = [], []

    def attaches_to(self, proto, inside_port, remote_port):
        return proto == 17 and remote_port == 1701

    def packet(self, session, frame, ip, l4, outbound, now):
        src = ".".join(str(b) for b in frame[ip + 12:ip + 16])
        self.seen.append((outbound, src))
        return Verdict.DROP if frame[-1:] == b"!" else Verdict.FORWARD

    def closed(self, session, now):
        self.closed_sessions.append(session.id)

    def describe(self, session):
        return [("tunnel_id", 7)]


def test_helper_sees_its_flows_before_translation_and_can_drop():
    r = make_router(timeouts={"udp": 10})
    helper = RecordingHelper()
    r.helpers.append(helper)
    (out,) = step(r, LAN, from_lan(C1, S1, UDP(sport=1701, dport=1701) / b"sccrq"), 0.0)[WAN]
    assert out[IP].src == WAN_IP
    step(r, WAN, from_wan(S1, UDP(sport=1701, dport=1701) / b"sccrp"), 0.5)
    assert helper.seen == [(True, C1), (False, S1)]
    assert step(r, LAN, from_lan(C1, S1, UDP(sport=1701, dport=1701) / b"bad!"), 1.0)[WAN] == []
    assert r.counters["drop_helper"] == 1
    (info,) = r.session_infos(1.0)
    assert info.vpn == "l2tp" and info.to_dict()["tunnel_id"] == 7
    step(r, LAN, from_lan(C1, S1, UDP(sport=5000, dport=53)), 1.0)     # not its flow
    assert len(helper.seen) == 3
    r.handle_timer(20.0)
    assert len(helper.closed_sessions) == 1
