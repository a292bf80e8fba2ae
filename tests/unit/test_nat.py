"""NAPT behaviour, frames in and frames out (RFC 4787, 5382, 5508, 7857)."""

from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, UDPerror

from tests.unit.frames import (C1, C2, FAR, GW, LAN, LAN_IP, MACS, S1, S2, WAN, WAN_IP, from_lan, from_wan,
                    make_router, partial_frame, step)
from router.dataplane.events import DropReason, SessionClosed, SessionOpened
from router.packet.frame import GSO_TCPV4


def udp_out(r, src=C1, sport=5000, dst=S1, dport=53, now=1.0, payload=b"q"):
    return step(r, LAN, from_lan(src, dst, UDP(sport=sport, dport=dport) / payload), now)


def test_udp_outbound_gets_wan_source_and_keeps_port():
    r = make_router()
    out = udp_out(r)
    (pkt,) = out[WAN]
    assert pkt[IP].src == WAN_IP and pkt[UDP].sport == 5000 and pkt[IP].ttl == 63
    assert pkt.dst == MACS[S1] and out[LAN] == []


def test_reply_reaches_the_inside_host():
    r = make_router()
    udp_out(r)
    (back,) = step(r, WAN, from_wan(S1, UDP(sport=53, dport=5000) / b"a"), 2.0)[LAN]
    assert back[IP].dst == C1 and back[UDP].dport == 5000 and back.dst == MACS[C1]


def test_mapping_is_endpoint_independent():
    """RFC 4787 REQ-1: one inside endpoint has one outside port whatever the destination."""
    r = make_router()
    a = udp_out(r, dst=S1)[WAN][0][UDP].sport
    b = udp_out(r, dst=S2)[WAN][0][UDP].sport
    c = udp_out(r, dst=FAR, dport=4000)[WAN][0]
    assert a == b == c[UDP].sport
    assert c.dst == MACS[GW]


def test_second_host_with_same_port_gets_a_random_other_port():
    r = make_router()
    first = udp_out(r, src=C1, sport=5000)[WAN][0][UDP].sport
    second = udp_out(r, src=C2, sport=5000)[WAN][0][UDP].sport
    assert first == 5000 and second != 5000 and second >= 1024
    (back,) = step(r, WAN, from_wan(S1, UDP(sport=53, dport=second)), 2.0)[LAN]
    assert back[IP].dst == C2 and back[UDP].dport == 5000


def test_privileged_port_stays_privileged():
    """RFC 4787 REQ-3: ports below 1024 map below 1024."""
    r = make_router()
    udp_out(r, src=C1, sport=500)
    port = udp_out(r, src=C2, sport=500)[WAN][0][UDP].sport
    assert 1 <= port < 1024 and port != 500


def test_unsolicited_inbound_is_dropped_silently():
    r = make_router()
    out = step(r, WAN, from_wan(S1, UDP(sport=53, dport=5000)))
    assert out == {LAN: [], WAN: []}
    out = step(r, WAN, from_wan(S1, TCP(sport=80, dport=40000, flags="S")))
    assert out == {LAN: [], WAN: []}
    assert r.counters["drop_unsolicited"] == 2


def test_address_dependent_filtering_by_default():
    r = make_router()
    port = udp_out(r, dst=S1)[WAN][0][UDP].sport
    assert step(r, WAN, from_wan(S2, UDP(sport=53, dport=port)))[LAN] == []
    assert len(step(r, WAN, from_wan(S1, UDP(sport=9999, dport=port)))[LAN]) == 1


def test_endpoint_independent_filtering_when_configured():
    r = make_router(nat={"filtering": "endpoint-independent"})
    port = udp_out(r, dst=S1)[WAN][0][UDP].sport
    (pkt,) = step(r, WAN, from_wan(S2, UDP(sport=53, dport=port)))[LAN]
    assert pkt[IP].dst == C1


def test_udp_session_expires_after_its_timeout():
    r = make_router(timeouts={"udp": 120})
    udp_out(r, now=0.0)
    r.handle_timer(100.0)
    assert len(r.nat) == 1
    udp_out(r, now=100.0)   # outbound refreshes (RFC 4787 REQ-6)
    r.handle_timer(219.0)
    assert len(r.nat) == 1
    r.handle_timer(221.0)
    assert len(r.nat) == 0
    assert step(r, WAN, from_wan(S1, UDP(sport=53, dport=5000)), 222.0)[LAN] == []


def test_default_udp_timeout_is_five_minutes():
    r = make_router()
    udp_out(r, now=0.0)
    r.handle_timer(299.0)
    assert len(r.nat) == 1
    r.handle_timer(301.0)
    assert len(r.nat) == 0


def test_get_timer_tells_when_to_expire():
    r = make_router(timeouts={"udp": 30})
    assert r.get_timer() is None
    udp_out(r, now=5.0)
    assert r.get_timer() == 35.0


def tcp(r, flags, outbound=True, now=1.0, sport=40000, dport=80, out_port=None, payload=b""):
    if outbound:
        return step(r, LAN, from_lan(C1, S1, TCP(sport=sport, dport=dport, flags=flags) / payload), now)
    return step(r, WAN, from_wan(S1, TCP(sport=dport, dport=out_port or sport, flags=flags) / payload), now)


def session_state(r):
    (s,) = r.nat.sessions()
    return s.state.value


def test_tcp_handshake_data_and_close_states():
    r = make_router()
    assert len(tcp(r, "S")[WAN]) == 1
    assert session_state(r) == "syn_out"
    assert len(tcp(r, "SA", outbound=False)[LAN]) == 1
    assert session_state(r) == "established"
    tcp(r, "A", payload=b"GET /")
    tcp(r, "FA")
    assert session_state(r) == "fin_out"
    tcp(r, "FA", outbound=False, now=2.0)
    assert session_state(r) == "fin_both"
    r.handle_timer(2.0 + 239)
    assert len(r.nat) == 1
    r.handle_timer(2.0 + 241)
    assert len(r.nat) == 0


def test_tcp_established_lives_two_hours_four_minutes():
    """RFC 5382 REQ-5: at least 2 h 4 min idle for established connections."""
    r = make_router()
    tcp(r, "S", now=0.0)
    tcp(r, "SA", outbound=False, now=0.0)
    r.handle_timer(7439.0)
    assert len(r.nat) == 1
    r.handle_timer(7441.0)
    assert len(r.nat) == 0


def test_tcp_rst_keeps_state_four_minutes():
    """RFC 7857 §3.2."""
    r = make_router()
    tcp(r, "S", now=0.0)
    tcp(r, "SA", outbound=False, now=0.0)
    tcp(r, "R", outbound=False, now=10.0)
    assert session_state(r) == "trans"
    r.handle_timer(249.0)
    assert len(r.nat) == 1
    r.handle_timer(251.0)
    assert len(r.nat) == 0


def test_tcp_syn_sent_unanswered_expires_after_transitory_timeout():
    r = make_router()
    tcp(r, "S", now=0.0)
    r.handle_timer(241.0)
    assert len(r.nat) == 0


def test_new_tcp_flow_must_start_with_syn():
    r = make_router()
    assert tcp(r, "A")[WAN] == []
    assert r.counters["drop_tcp_no_session"] == 1


def test_icmp_echo_is_mapped_by_identifier():
    r = make_router()
    (a,) = step(r, LAN, from_lan(C1, S1, ICMP(id=7, seq=1) / b"x"))[WAN]
    (b,) = step(r, LAN, from_lan(C2, S1, ICMP(id=7, seq=1) / b"x"))[WAN]
    assert a[ICMP].id != b[ICMP].id and a[IP].src == b[IP].src == WAN_IP
    (reply,) = step(r, WAN, from_wan(S1, ICMP(type=0, id=b[ICMP].id, seq=1) / b"x"))[LAN]
    assert reply[IP].dst == C2 and reply[ICMP].id == 7


def test_icmp_query_timeout_is_sixty_seconds():
    """RFC 5508 REQ-1."""
    r = make_router()
    step(r, LAN, from_lan(C1, S1, ICMP(id=7)), 0.0)
    r.handle_timer(59.0)
    assert len(r.nat) == 1
    r.handle_timer(61.0)
    assert len(r.nat) == 0


def test_inbound_icmp_error_is_translated_with_embedded_headers():
    """RFC 5508 §4.2: port unreachable from the server reaches the client with its own addresses."""
    r = make_router()
    udp_out(r, src=C2, sport=5000)   # C2 keeps 5000 ...
    (sent,) = udp_out(r, src=C1, sport=5000)[WAN]  # ... so C1 gets another port
    error = from_wan(S1, ICMP(type=3, code=3) / bytes(sent[IP])[:28])
    (pkt,) = step(r, WAN, error, 2.0)[LAN]
    assert pkt[IP].dst == C1
    assert pkt[IPerror].src == C1 and pkt[UDPerror].sport == 5000
    assert len(r.nat) == 2


def test_outbound_icmp_error_is_translated():
    r = make_router(nat={"filtering": "endpoint-independent"})
    (sent,) = udp_out(r, src=C1, sport=5000)[WAN]
    (delivered,) = step(r, WAN, from_wan(S1, UDP(sport=53, dport=sent[UDP].sport) / b"r"))[LAN]
    error = from_lan(C1, S1, ICMP(type=3, code=3) / bytes(delivered[IP])[:28])
    (pkt,) = step(r, LAN, error, 2.0)[WAN]
    assert pkt[IP].src == WAN_IP and pkt[IPerror].dst == WAN_IP
    assert pkt[UDPerror].dport == sent[UDP].sport


def test_icmp_error_with_bad_checksum_is_dropped():
    r = make_router()
    (sent,) = udp_out(r)[WAN]
    error = from_wan(S1, ICMP(type=3, code=3, chksum=0x1234) / bytes(sent[IP])[:28])
    assert step(r, WAN, error)[LAN] == []
    assert r.counters["drop_bad_icmp_checksum"] == 1


def test_icmp_error_does_not_refresh_the_session():
    r = make_router(timeouts={"udp": 100})
    (sent,) = udp_out(r, now=0.0)[WAN]
    step(r, WAN, from_wan(S1, ICMP(type=3, code=3) / bytes(sent[IP])[:28]), 90.0)
    r.handle_timer(101.0)
    assert len(r.nat) == 0


def test_ttl_exceeded_is_answered():
    r = make_router()
    out = step(r, LAN, from_lan(C1, S1, UDP(sport=1, dport=2), ttl=1))
    (err,) = out[LAN]
    assert err[IP].src == LAN_IP and err[IP].dst == C1 and err[ICMP].type == 11
    assert err[IPerror].dst == S1 and out[WAN] == []


def test_fragmentation_needed_for_df_datagram_too_big():
    r = make_router(wan={"mtu": 1000})
    out = step(r, LAN, from_lan(C1, S1, UDP(sport=1, dport=2) / bytes(1200), flags="DF"))
    (err,) = out[LAN]
    assert err[ICMP].type == 3 and err[ICMP].code == 4 and err[ICMP].nexthopmtu == 1000
    assert err[IPerror].src == C1  # the original, untranslated
    assert out[WAN] == []


def test_datagram_too_big_without_df_is_fragmented():
    r = make_router(wan={"mtu": 1000})
    payload = bytes(range(256)) * 6
    out = step(r, LAN, from_lan(C1, S1, UDP(sport=1, dport=2) / payload))
    pieces = out[WAN]
    assert len(pieces) == 2 and all(len(p[IP]) <= 1000 for p in pieces)
    assert pieces[0][IP].flags.MF and not pieces[1][IP].flags.MF and pieces[1][IP].frag * 8 == 976
    data = b"".join(bytes(p[IP])[20:] for p in pieces)
    whole = IP(bytes(IP(src=WAN_IP, dst=S1, proto=17, id=pieces[0][IP].id) / data))
    assert whole[UDP].load == payload and whole[UDP].sport == 1
    from tests.unit.frames import check_checksums
    check_checksums(whole)   # the reassembled datagram's UDP checksum is right


def test_gso_superframe_is_not_fragmented_and_keeps_partial_checksum():
    r = make_router()
    tcp(r, "S")
    tcp(r, "SA", outbound=False)
    pkt = from_lan(C1, S1, TCP(sport=40000, dport=80, flags="A") / bytes(30000))
    frame = partial_frame(pkt, gso_type=GSO_TCPV4, gso_size=1448)
    r.receive_frame(LAN, frame, 2.0)
    (out,) = r.take_outbox(WAN)
    from tests.unit.frames import emitted
    sent = emitted(out)   # verifies the partial pseudo-header sum against the new addresses
    assert sent.vnet_flags == 1 and sent[IP].src == WAN_IP and out[1] == GSO_TCPV4
    (s,) = r.nat.sessions()
    assert s.packets_out == 1 + 21  # the SYN and 30000 bytes in 1448-byte segments


def test_partial_checksum_inbound():
    r = make_router()
    tcp(r, "S")
    pkt = from_wan(S1, TCP(sport=80, dport=40000, flags="SA") / b"hello")
    r.receive_frame(WAN, partial_frame(pkt), 1.5)
    from tests.unit.frames import emitted
    (out,) = r.take_outbox(LAN)
    assert emitted(out)[IP].dst == C1


def test_hairpinning():
    """RFC 4787 REQ-9: a LAN host reaches another through the WAN address, seen as coming from it."""
    r = make_router(forward=[{"proto": "udp", "port": 7000, "to": f"{C2}:7000"}])
    out = step(r, LAN, from_lan(C1, WAN_IP, UDP(sport=5000, dport=7000) / b"hi"))
    (pkt,) = out[LAN]
    assert pkt[IP].dst == C2 and pkt[UDP].dport == 7000
    assert pkt[IP].src == WAN_IP and pkt[UDP].sport == 5000 and pkt[IP].ttl == 63
    (back,) = step(r, LAN, from_lan(C2, WAN_IP, UDP(sport=7000, dport=5000) / b"yo"))[LAN]
    assert back[IP].dst == C1 and back[UDP].dport == 5000 and back[UDP].sport == 7000


def test_port_forward_accepts_inbound_connections():
    r = make_router(forward=[{"proto": "tcp", "port": 8080, "to": f"{C2}:80"}])
    (syn,) = step(r, WAN, from_wan(S2, TCP(sport=33000, dport=8080, flags="S")))[LAN]
    assert syn[IP].dst == C2 and syn[TCP].dport == 80
    (synack,) = step(r, LAN, from_lan(C2, S2, TCP(sport=80, dport=33000, flags="SA")))[WAN]
    assert synack[IP].src == WAN_IP and synack[TCP].sport == 8080
    assert session_state(r) == "established"


def test_spoofed_lan_source_is_dropped():
    r = make_router()
    assert step(r, LAN, from_lan(C1, S1, UDP(), ip_src="10.9.9.9"))[WAN] == []
    assert r.counters["drop_spoofed_source"] == 1


def test_session_limit_refuses_with_admin_prohibited():
    r = make_router(limits={"sessions_per_host": 2})
    udp_out(r, sport=1000)
    udp_out(r, sport=1001)
    out = udp_out(r, sport=1002)
    (err,) = out[LAN]
    assert out[WAN] == [] and err[ICMP].type == 3 and err[ICMP].code == 13
    assert r.counters["drop_session_limit"] == 1
    assert len(udp_out(r, src=C2, sport=1002)[WAN]) == 1   # others keep working
    assert len(udp_out(r, sport=1000)[WAN]) == 1            # and so do existing flows


def test_total_session_limit():
    r = make_router(limits={"sessions": 1})
    udp_out(r, sport=1000)
    assert udp_out(r, src=C2, sport=1000)[WAN] == []
    assert r.counters["drop_session_limit"] == 1


def test_out_of_order_fragments_follow_their_first_fragment():
    """RFC 4787 REQ-14."""
    r = make_router()
    whole = IP(src=C1, dst=S1, id=4242) / UDP(sport=5000, dport=53) / (bytes(range(200)) * 2)
    from scapy.layers.inet import fragment as scapy_fragment
    from scapy.layers.l2 import Ether
    from tests.unit.frames import LAN_MAC
    first, second, third = scapy_fragment(whole, fragsize=144)
    frame = lambda f: Ether(src=MACS[C1], dst=LAN_MAC) / f
    assert step(r, LAN, frame(third))[WAN] == []       # waits for the first
    out1 = step(r, LAN, frame(first))[WAN]
    assert [p[IP].frag for p in out1] == [0, third.frag]
    (out2,) = step(r, LAN, frame(second))[WAN]
    assert all(p[IP].src == WAN_IP for p in out1 + [out2])


def test_orphan_fragments_time_out():
    r = make_router()
    pkt = from_lan(C1, S1, UDP(sport=1, dport=2), id=9, frag=20, proto=17)
    step(r, LAN, pkt, 0.0)
    r.handle_timer(31.0)
    assert r.counters["drop_fragment_orphaned"] == 1


def test_events_report_sessions():
    r = make_router(timeouts={"udp": 10})
    udp_out(r, now=0.0)
    event = r.next_event()
    assert isinstance(event, SessionOpened) and event.session.inside == f"{C1}:5000"
    r.handle_timer(11.0)
    closed = r.next_event()
    assert isinstance(closed, SessionClosed) and closed.reason == "timeout"


def test_ipv6_is_dropped_and_counted():
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether
    from tests.unit.frames import LAN_MAC
    r = make_router()
    step(r, LAN, Ether(src=MACS[C1], dst=LAN_MAC) / IPv6() / UDP())
    assert r.counters["drop_non_ipv4"] == 1
    assert r.next_event().reason == DropReason.NON_IPV4
