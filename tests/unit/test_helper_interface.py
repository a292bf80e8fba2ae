"""The helper seam: port-attached helpers, IP-protocol handlers, shared outside ports, declared counters.

Toy helpers stand for real protocols here, so that the data plane is shown to
name none: everything they get, they get through the interface in
``router.helpers.base``.
"""

from scapy.layers.inet import IP, UDP, fragment
from scapy.packet import Raw

from tests.unit.frames import C1, C2, C3, LAN, S1, S2, WAN, WAN_IP, from_lan, from_wan, make_router, step
from router.helpers.base import Flow, Helper, Verdict

TOY_PROTO = 99      # "any private encryption scheme" (IANA): no ports, so an IP-protocol handler's
SHARED = 7000


class RecordingHelper(Helper):
    """Port-attached on UDP 1701; drops what ends in '!'."""
    name = "recorder"
    counters = ("toy_seen",)
    drop_reasons = ("toy_refused",)

    def __init__(self):
        super().__init__(None)
        self.seen, self.closed_sessions = [], []

    def attaches_to(self, proto, inside_port, remote_port):
        return proto == 17 and remote_port == 1701

    def timeout(self, session):
        return 42.0

    def packet(self, session, frame, ip, l4, outbound, now):
        src = ".".join(str(b) for b in frame[ip + 12:ip + 16])
        self.seen.append((outbound, src))
        self.ctx.count("toy_seen")
        return Verdict.DROP if frame[-1:] == b"!" else Verdict.FORWARD

    def closed(self, session, now):
        self.closed_sessions.append(session.id)

    def describe(self, session):
        return [("tunnel_id", 7)]


class ToyFlow(Flow):
    proto = "toy"
    vpn = "toy"

    def details(self):
        return {"tag": self.tag}

    __slots__ = ("tag",)


class PortlessHelper(Helper):
    """IP protocol 99: the first payload byte is a tag; one flow per (inside, remote, tag)."""
    name = "toy"
    ip_protocols = (TOY_PROTO,)
    drop_reasons = ("toy_no_flow",)

    def __init__(self):
        super().__init__(None)
        self.by_tag = {}

    def flow_out(self, proto, frame, l4, size, src, dst, now):
        tag = frame[l4]
        flow = self.by_tag.get((dst, tag))
        if flow is None:
            flow = self.by_tag[(dst, tag)] = ToyFlow(self.ctx.new_id(), src, dst, self.ctx.wan_ip, now)
            flow.tag = tag
            self.opened(flow, now)
        return flow

    def flow_in(self, proto, frame, l4, size, src, now):
        flow = self.by_tag.get((src, frame[l4]))
        if flow is None:
            self.ctx.drop("toy_no_flow", f"tag {frame[l4]}", now)
        return flow

    def end_flow(self, flow, reason, now):
        del self.by_tag[(flow.remote_ip, flow.tag)]
        self.ended(flow, reason, now)


class SharingHelper(Helper):
    """UDP 7000 keeps its port outside for every client; inbound picks the client named by the payload."""
    name = "sharer"

    def attaches_to(self, proto, inside_port, remote_port):
        return proto == 17 and remote_port == SHARED

    def shares_port(self, proto, inside_port, remote_port):
        return inside_port == SHARED

    def demux(self, candidates, frame, ip, l4, now):
        wanted = int(frame[l4 + 8:l4 + 10].decode())   # "11" -> 192.168.77.11
        return next((s for s in candidates if s.inside_ip & 0xFF == wanted), None)


def test_port_attached_helper_sees_its_flows_before_translation_and_can_drop():
    helper = RecordingHelper()
    r = make_router(helpers=(helper,), timeouts={"udp": 10})
    assert r.counters["toy_seen"] == 0 and r.counters["drop_toy_refused"] == 0   # declared, at zero
    (out,) = step(r, LAN, from_lan(C1, S1, UDP(sport=1701, dport=1701) / b"sccrq"), 0.0)[WAN]
    assert out[IP].src == WAN_IP
    step(r, WAN, from_wan(S1, UDP(sport=1701, dport=1701) / b"sccrp"), 0.5)
    assert helper.seen == [(True, C1), (False, S1)] and r.counters["toy_seen"] == 2
    assert step(r, LAN, from_lan(C1, S1, UDP(sport=1701, dport=1701) / b"bad!"), 1.0)[WAN] == []
    assert r.counters["drop_helper"] == 1
    (info,) = r.session_infos(1.0)
    assert info.vpn == "recorder" and info.to_dict()["tunnel_id"] == 7
    step(r, LAN, from_lan(C1, S1, UDP(sport=5000, dport=53)), 1.0)     # not its flow
    assert len(helper.seen) == 3
    r.handle_timer(20.0)          # past udp (10 s), within the helper's own 42 s
    assert helper.closed_sessions == [] and len(r.session_infos(20.0)) == 1
    r.handle_timer(44.0)
    assert len(helper.closed_sessions) == 1


def test_ip_protocol_handler_finds_the_flow_and_the_data_plane_rewrites_the_address():
    r = make_router(helpers=(PortlessHelper(),))
    (out,) = step(r, LAN, from_lan(C1, S1, Raw(b"\x05payload"), proto=TOY_PROTO), 0.0)[WAN]
    assert out[IP].src == WAN_IP and out[IP].dst == S1 and bytes(out[IP].payload) == b"\x05payload"
    (back,) = step(r, WAN, from_wan(S1, Raw(b"\x05reply"), proto=TOY_PROTO), 1.0)[LAN]
    assert back[IP].dst == C1 and back[IP].src == S1
    assert step(r, WAN, from_wan(S2, Raw(b"\x05reply"), proto=TOY_PROTO), 1.0)[LAN] == []
    assert r.counters["drop_toy_no_flow"] == 1
    (info,) = r.session_infos(2.0)
    assert (info.proto, info.vpn, info.packets_out, info.packets_in, info.to_dict()["tag"]) == \
        ("toy", "toy", 1, 1, 5)
    r.set_passthrough("toy", False, 3.0)
    assert r.session_infos(3.0) == []
    assert step(r, LAN, from_lan(C1, S1, Raw(b"\x05again"), proto=TOY_PROTO), 4.0)[WAN] == []
    assert r.counters["drop_passthrough_off"] == 1


def test_fragments_of_a_portless_protocol_follow_their_flow_in_any_order():
    r = make_router(helpers=(PortlessHelper(),))
    first, second = fragment(IP(src=C1, dst=S1, proto=TOY_PROTO, id=77) / Raw(b"\x09" + bytes(2000)), 1000)[:2]
    out = step(r, LAN, from_lan(C1, S1, second[IP].payload, ip_src=C1, proto=TOY_PROTO, id=77, frag=second.frag,
                                flags=second.flags), 0.0)[WAN]
    assert out == []                       # waits for its first fragment
    out = step(r, LAN, from_lan(C1, S1, first[IP].payload, proto=TOY_PROTO, id=77, flags="MF"), 0.1)[WAN]
    assert [p[IP].src for p in out] == [WAN_IP, WAN_IP] and sorted(p[IP].frag for p in out) == [0, second.frag]
    inbound = fragment(IP(src=S1, dst=WAN_IP, proto=TOY_PROTO, id=5) / Raw(b"\x09" + bytes(2000)), 1000)
    got = [step(r, WAN, from_wan(S1, f[IP].payload, proto=TOY_PROTO, id=5, frag=f.frag, flags=f.flags), 1.0)[LAN]
           for f in inbound]
    assert [p[IP].dst for batch in got for p in batch] == [C1] * len(inbound)
    assert r.counters["drop_fragment_orphaned"] == 0


def test_shared_outside_port_is_kept_by_every_client_and_demultiplexed_by_the_helper():
    r = make_router(helpers=(SharingHelper(),))
    for client in (C1, C2):
        (out,) = step(r, LAN, from_lan(client, S1, UDP(sport=SHARED, dport=SHARED) / b"hello"), 0.0)[WAN]
        assert out[UDP].sport == SHARED
    for client in (C2, C1):
        tag = client.rsplit(".", 1)[1].encode()
        (back,) = step(r, WAN, from_wan(S1, UDP(sport=SHARED, dport=SHARED) / tag), 1.0)[LAN]
        assert back[IP].dst == client and back[UDP].dport == SHARED
    assert step(r, WAN, from_wan(S1, UDP(sport=SHARED, dport=SHARED) / b"99"), 1.0)[LAN] == []
    assert r.counters["drop_shared_port_unmatched"] == 1
    # an ordinary flow is never given the shared port
    (other,) = step(r, LAN, from_lan(C1, S2, UDP(sport=SHARED, dport=53)), 2.0)[WAN]
    assert other[UDP].sport == SHARED   # the same mapping (endpoint-independent), so the same port
    (plain,) = step(r, LAN, from_lan(C3, S2, UDP(sport=SHARED, dport=53)), 2.0)[WAN]
    assert plain[UDP].sport not in (SHARED, 0)


def test_session_ids_are_unique_across_nat_sessions_and_helper_flows():
    r = make_router(helpers=(PortlessHelper(),))
    step(r, LAN, from_lan(C1, S1, UDP(sport=1000, dport=53)), 0.0)
    step(r, LAN, from_lan(C1, S1, Raw(b"\x01"), proto=TOY_PROTO), 0.0)
    step(r, LAN, from_lan(C2, S1, UDP(sport=1000, dport=53)), 0.0)
    step(r, LAN, from_lan(C2, S1, Raw(b"\x02"), proto=TOY_PROTO), 0.0)
    ids = [s.id for s in r.session_infos(1.0)]
    assert len(ids) == 4 and len(set(ids)) == 4
