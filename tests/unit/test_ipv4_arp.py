"""ARP (RFC 826), IPv4 header checks (RFC 1812 §5.2.2) and the router's own addresses."""

from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.l2 import ARP, Ether

from tests.unit.frames import (C1, LAN, LAN_IP, LAN_MAC, MACS, S1, WAN, WAN_IP, WAN_MAC, from_lan, from_wan,
                               make_router, step, wire)
from router.config import parse
from router.dataplane.router import Router
from tests.unit.frames import config


def test_start_announces_both_addresses():
    r = Router(parse(config()))
    r.start(0.0)
    (lan,) = r.take_outbox(LAN)
    (wan,) = r.take_outbox(WAN)
    for frame, ip, mac in ((lan, LAN_IP, LAN_MAC), (wan, WAN_IP, WAN_MAC)):
        arp = Ether(bytes(frame[12:]))[ARP]
        assert arp.psrc == arp.pdst == ip and arp.hwsrc == mac and arp.op == 1


def test_arp_request_for_router_is_answered():
    r = make_router()
    request = Ether(src=MACS[C1], dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=MACS[C1], psrc=C1, pdst=LAN_IP)
    (reply,) = step(r, LAN, request)[LAN]
    assert reply[ARP].op == 2 and reply[ARP].hwsrc == LAN_MAC and reply[ARP].psrc == LAN_IP
    assert reply.dst == MACS[C1] and reply[ARP].pdst == C1


def test_arp_request_for_another_host_is_ignored():
    r = make_router()
    request = Ether(src=MACS[C1], dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=MACS[C1], psrc=C1, pdst="192.168.77.99")
    assert step(r, LAN, request) == {LAN: [], WAN: []}


def test_unknown_next_hop_is_resolved_and_queued_frames_follow():
    r = Router(parse(config()))
    r.start(0.0)
    r.take_outbox(LAN), r.take_outbox(WAN)
    request_from_c1 = Ether(src=MACS[C1], dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=MACS[C1], psrc=C1, pdst=LAN_IP)
    step(r, LAN, request_from_c1)
    out = step(r, LAN, from_lan(C1, S1, UDP(sport=1, dport=2)), 1.0)
    (request,) = out[WAN]
    assert request[ARP].pdst == S1 and request[ARP].op == 1 and request.dst == "ff:ff:ff:ff:ff:ff"
    step(r, LAN, from_lan(C1, S1, UDP(sport=1, dport=2)), 1.1)      # a second frame waits too
    reply = Ether(src=MACS[S1], dst=WAN_MAC) / ARP(op=2, hwsrc=MACS[S1], psrc=S1, hwdst=WAN_MAC, pdst=WAN_IP)
    released = step(r, WAN, reply, 1.2)[WAN]
    assert len(released) == 2 and all(p.dst == MACS[S1] and p[IP].src == WAN_IP for p in released)


def test_unresolved_next_hop_is_retried_then_given_up():
    r = make_router()
    out = step(r, LAN, from_lan(C1, "198.51.100.77", UDP(sport=1, dport=2)), 0.0)
    assert len(out[WAN]) == 1
    r.handle_timer(1.0)
    r.handle_timer(2.0)
    assert len(r.take_outbox(WAN)) == 2
    r.handle_timer(3.0)
    assert r.counters["drop_arp_unresolved"] == 1


def test_arp_queue_is_bounded():
    r = make_router(limits={"arp_queue": 2})
    for i in range(4):
        step(r, LAN, from_lan(C1, "198.51.100.77", UDP(sport=1, dport=2)), 0.0)
    assert r.counters["drop_arp_queue_full"] == 2


def test_stale_neighbour_is_revalidated_while_used():
    r = make_router(timeouts={"arp_cache": 10})
    out = step(r, LAN, from_lan(C1, S1, UDP(sport=1, dport=2)), 11.0)
    assert len(out[WAN]) == 2   # the datagram, and a unicast request to S1
    assert out[WAN][1][ARP].pdst == S1 and out[WAN][1].dst == MACS[S1]


def test_ping_to_router_addresses_is_answered():
    r = make_router()
    (reply,) = step(r, LAN, from_lan(C1, LAN_IP, ICMP(id=3, seq=4) / b"abc"))[LAN]
    assert reply[ICMP].type == 0 and reply[IP].src == LAN_IP and reply[ICMP].id == 3 and reply.load == b"abc"
    (reply,) = step(r, WAN, from_wan(S1, ICMP(id=3) / b"abc"))[WAN]
    assert reply[IP].src == WAN_IP and reply[IP].dst == S1
    (reply,) = step(r, LAN, from_lan(C1, WAN_IP, ICMP(id=5)))[LAN]
    assert reply[IP].src == WAN_IP and reply[IP].dst == C1


def test_udp_to_router_gets_port_unreachable_on_lan_only():
    r = make_router()
    (err,) = step(r, LAN, from_lan(C1, LAN_IP, UDP(sport=1, dport=9)))[LAN]
    assert err[ICMP].type == 3 and err[ICMP].code == 3
    assert step(r, WAN, from_wan(S1, UDP(sport=1, dport=9))) == {LAN: [], WAN: []}


def test_bad_ip_checksum_is_dropped():
    r = make_router()
    assert step(r, LAN, from_lan(C1, S1, UDP(), chksum=0x1111))[WAN] == []
    assert r.counters["drop_bad_ip_checksum"] == 1


def test_bad_lengths_are_dropped():
    r = make_router()
    frame = wire(from_lan(C1, S1, UDP() / b"xx"))
    frame[12 + 14 + 3] += 40   # total length beyond the frame
    step(r, LAN, frame)
    assert r.counters["drop_bad_ip_header"] == 1
    step(r, LAN, wire(from_lan(C1, S1, UDP(), ihl=4)))
    assert r.counters["drop_bad_ip_header"] == 2
    step(r, LAN, wire(from_lan(C1, S1, UDP()))[:30])
    assert r.counters["drop_truncated"] == 1


def test_ethernet_padding_is_removed():
    r = make_router()
    frame = wire(from_lan(C1, S1, UDP(sport=1, dport=2))) + bytes(18)
    (pkt,) = step(r, LAN, frame)[WAN]
    assert len(pkt) == 14 + 28


def test_frames_for_other_macs_are_ignored():
    r = make_router()
    pkt = Ether(src=MACS[C1], dst="02:99:99:99:99:99") / IP(src=C1, dst=S1) / UDP()
    assert step(r, LAN, pkt) == {LAN: [], WAN: []}
    assert r.counters["ignored_other_mac"] == 1


def test_wan_traffic_for_other_addresses_is_not_routed():
    r = make_router()
    assert step(r, WAN, from_wan(S1, UDP(), dst=C1)) == {LAN: [], WAN: []}
    assert r.counters["drop_not_routable"] == 1


def test_headers_without_payload_to_router_addresses_do_not_raise():
    r = make_router()
    for dst in (WAN_IP, LAN_IP):
        step(r, LAN, from_lan(C1, dst, b"", proto=1))   # an IPv4 header alone, protocol ICMP
    step(r, WAN, from_wan(S1, b"", proto=1))
    assert r.counters["drop_truncated"] + r.counters["drop_unsupported_protocol"] >= 2
