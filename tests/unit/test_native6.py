"""Native IPv6 through the router on an IPv6 WAN: SLAAC by Router Advertisements (RFC 4861, RFC 4862),
forwarding without translation, and RFC 6092's stateful firewall with its IPv6 IPsec switch; scapy checks
every checksum of every frame the router emits (``frames.emitted``)."""

from __future__ import annotations

import random

import pytest
from scapy.layers.inet6 import (ICMPv6DestUnreach, ICMPv6EchoReply, ICMPv6EchoRequest, ICMPv6ND_NA, ICMPv6ND_NS,
                                ICMPv6ND_RA, ICMPv6ND_RS, ICMPv6NDOptDstLLAddr, ICMPv6NDOptMTU,
                                ICMPv6NDOptPrefixInfo, ICMPv6NDOptSrcLLAddr, ICMPv6PacketTooBig, ICMPv6TimeExceeded,
                                IPv6)
from scapy.layers.inet import TCP, UDP
from scapy.layers.ipsec import ESP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from router.config import parse
from router.dataplane.router import LAN, WAN
from router.fastpath import make_router
from router.helpers.registry import build_helpers
from tests.unit.frames import LAN_MAC, emitted, step
from tests.unit.test_softwire import GATEWAY6, GATEWAY_MAC, advertisement, wan_config

ROUTER_MAC = "02:76:72:01:64:c2"
LAN_PREFIX = "2001:db8:a:2301::"
ROUTER_LL = "fe80::76:72ff:fe00:4d01"
"""The modified EUI-64 link-local address of the router's LAN MAC 02:76:72:00:4d:01 (RFC 4291 Appendix A)."""
H1, H1_MAC = "2001:db8:a:2301::11", "02:00:00:00:00:11"
H2, H2_MAC = "2001:db8:a:2301::12", "02:00:00:00:00:12"
SERVER6 = "2001:db8:5::10"
SWITCH = "ipv6_ipsec"
"""The IPv6 IPsec switch, as issue 20 names it: the IPsec helper's ``ipv6_inbound`` (RFC 6092 §3.2.4)."""


def router6(mode: str = "map-e", **extra):
    cfg = parse(wan_config(mode, **extra))
    r = make_router(cfg, build_helpers(cfg), rng=random.Random(1))
    r.start(0.0)
    r.take_outbox(WAN)
    r.ra_at_start = [p for p in map(emitted, r.take_outbox(LAN)) if p.haslayer(ICMPv6ND_RA)]
    step(r, WAN, advertisement(GATEWAY6), 0.0)
    for host, mac in ((H1, H1_MAC), (H2, H2_MAC)):
        ns = (Ether(src=mac, dst="33:33:ff:00:4d:01") / IPv6(src=host, dst="ff02::1:ff00:4d01", hlim=255)
              / ICMPv6ND_NS(tgt=ROUTER_LL) / ICMPv6NDOptSrcLLAddr(lladdr=mac))
        step(r, LAN, ns, 0.0)
    return r


def from_host(host: str, mac: str, l4, dst: str = SERVER6, hlim: int = 64):
    return Ether(src=mac, dst=LAN_MAC) / IPv6(src=host, dst=dst, hlim=hlim) / l4


def from_server(l4, dst: str = H1, src: str = SERVER6):
    return Ether(src=GATEWAY_MAC, dst=ROUTER_MAC) / IPv6(src=src, dst=dst, hlim=60) / l4


def only(out, port):
    assert len(out[port]) == 1 and not out[1 - port], out
    return out[port][0]


def test_the_lan_gets_its_prefix_by_router_advertisements():
    r = router6()
    assert len(r.ra_at_start) == 1
    ra = r.ra_at_start[0]
    assert (ra[IPv6].src, ra[IPv6].dst, ra[IPv6].hlim) == (ROUTER_LL, "ff02::1", 255)
    assert ra[ICMPv6ND_RA].routerlifetime == 1800 and ra[ICMPv6ND_RA].M == 0 and ra[ICMPv6ND_RA].O == 0
    info = ra[ICMPv6NDOptPrefixInfo]
    assert (info.prefix, info.prefixlen, info.L, info.A) == (LAN_PREFIX, 64, 1, 1)
    assert ra[ICMPv6NDOptMTU].mtu == 1500 and ra[ICMPv6NDOptSrcLLAddr].lladdr == LAN_MAC
    solicited = step(r, LAN, Ether(src=H1_MAC, dst="33:33:00:00:00:02") / IPv6(src="fe80::11", dst="ff02::2",
                                                                              hlim=255) / ICMPv6ND_RS(), 2.0)
    assert only(solicited, LAN)[ICMPv6NDOptPrefixInfo].prefix == LAN_PREFIX
    r.handle_timer(40.0)
    assert any(p.haslayer(ICMPv6ND_RA) for p in map(emitted, r.take_outbox(LAN)))     # and again, unasked


def test_the_router_answers_for_its_lan_addresses_as_a_router():
    r = router6()
    for target in (ROUTER_LL, LAN_PREFIX + "1"):
        ns = (Ether(src=H1_MAC, dst="33:33:ff:00:00:01") / IPv6(src=H1, dst="ff02::1:ff00:1", hlim=255)
              / ICMPv6ND_NS(tgt=target) / ICMPv6NDOptSrcLLAddr(lladdr=H1_MAC))
        na = only(step(r, LAN, ns), LAN)
        assert na[ICMPv6ND_NA].tgt == target and na[ICMPv6ND_NA].R == 1 and na[IPv6].dst == H1
        assert na[ICMPv6NDOptDstLLAddr].lladdr == LAN_MAC
    echo = only(step(r, LAN, from_host(H1, H1_MAC, ICMPv6EchoRequest(id=1), dst=LAN_PREFIX + "1")), LAN)
    assert echo[ICMPv6EchoReply].id == 1


def test_outbound_ipv6_is_forwarded_untranslated_and_its_reply_comes_back():
    r = router6()
    out = only(step(r, LAN, from_host(H1, H1_MAC, TCP(sport=40000, dport=443, flags="S"))), WAN)
    assert (out[IPv6].src, out[IPv6].dst, out[IPv6].hlim, out[TCP].sport) == (H1, SERVER6, 63, 40000)
    assert out[Ether].dst == GATEWAY_MAC and IPv6 not in out[IPv6].payload     # no softwire: native
    back = only(step(r, WAN, from_server(TCP(sport=443, dport=40000, flags="SA"))), LAN)
    assert (back[IPv6].dst, back[Ether].dst, back[IPv6].hlim) == (H1, H1_MAC, 59)
    [session] = [s.to_dict() for s in r.session_infos(1.0)]
    assert session["family"] == "ipv6" and session["proto"] == "tcp" and session["state"] == "established"
    assert session["inside"] == f"[{H1}]:40000" and session["remote"] == f"[{SERVER6}]:443"
    assert (session["packets_out"], session["packets_in"]) == (1, 1)
    assert r.counters["ipv6_forwarded_out"] == r.counters["ipv6_forwarded_in"] == 1


def test_a_lan_host_the_router_has_not_met_is_asked_for_first():
    r = router6()
    host, mac = "2001:db8:a:2301::99", "02:00:00:00:00:99"
    step(r, LAN, Ether(src=mac, dst=LAN_MAC) / IPv6(src=host, dst=SERVER6) / UDP(sport=5353, dport=53))
    out = step(r, WAN, from_server(UDP(sport=53, dport=5353), dst=host))
    ns = only(out, LAN)
    assert ns[ICMPv6ND_NS].tgt == host and ns[IPv6].dst == "ff02::1:ff00:99"
    na = (Ether(src=mac, dst=LAN_MAC) / IPv6(src=host, dst=ROUTER_LL, hlim=255)
          / ICMPv6ND_NA(tgt=host, S=1) / ICMPv6NDOptDstLLAddr(lladdr=mac))
    assert only(step(r, LAN, na), LAN)[UDP].dport == 5353


@pytest.mark.parametrize("l4", [TCP(sport=443, dport=40000, flags="S"), UDP(sport=53, dport=5353),
                                ICMPv6EchoRequest(id=9), ESP(spi=0x1000, seq=1) / Raw(bytes(16)),
                                UDP(sport=500, dport=500) / Raw(bytes(28))])
def test_unsolicited_inbound_ipv6_reaches_no_lan_host(l4):
    r = router6()
    assert step(r, WAN, from_server(l4)) == {LAN: [], WAN: []}
    assert r.counters["drop_ipv6_unsolicited"] == 1


def test_the_ipv6_ipsec_switch_lets_ike_and_esp_in_and_nothing_else():
    r = router6()
    assert r.set_ipv6_switch(SWITCH, True, 1.0) == {SWITCH: True}
    for l4 in (ESP(spi=0x1000, seq=1) / Raw(bytes(16)), UDP(sport=500, dport=500) / Raw(bytes(28)),
               UDP(sport=4500, dport=4500) / Raw(bytes(28))):
        assert only(step(r, WAN, from_server(l4)), LAN)[IPv6].dst == H1
    assert step(r, WAN, from_server(UDP(sport=53, dport=5353))) == {LAN: [], WAN: []}
    assert r.counters["ipv6_admitted_unasked"] == 3
    assert {s.to_dict()["state"] for s in r.session_infos(1.0)} == {"admitted"}
    r.set_ipv6_switch(SWITCH, False, 2.0)
    assert r.session_infos(2.0) == []
    assert step(r, WAN, from_server(ESP(spi=0x1000, seq=2) / Raw(bytes(16)))) == {LAN: [], WAN: []}


def test_the_switch_is_configured_and_shown():
    r = router6(**{SWITCH: True})
    assert r.status(1.0)["wan"]["ipv6_switches"] == {SWITCH: True}
    with pytest.raises(LookupError, match="no IPv6 switch 'ipv6_nothing'"):
        r.set_ipv6_switch("ipv6_nothing", True, 1.0)
    assert r.status(1.0)["wan"]["lan_prefix6"] == LAN_PREFIX + "/64"


def test_icmpv6_errors_come_in_only_for_a_flow_of_ours():
    r = router6()
    sent = only(step(r, LAN, from_host(H1, H1_MAC, UDP(sport=5000, dport=9) / Raw(b"x"))), WAN)
    quoted = bytes(sent[IPv6])
    error = from_server(ICMPv6DestUnreach(code=4) / quoted, src="2001:db8:5::1")
    assert only(step(r, WAN, error), LAN)[IPv6].dst == H1
    stranger = bytes(IPv6(src=H1, dst=SERVER6) / UDP(sport=6000, dport=9))
    assert step(r, WAN, from_server(ICMPv6DestUnreach(code=4) / stranger, src="2001:db8:5::1")) == {LAN: [], WAN: []}


def test_hop_limit_and_size_are_told_to_the_sender():
    r = router6(mtu=1400)
    exceeded = only(step(r, LAN, from_host(H1, H1_MAC, UDP(sport=5000, dport=9), hlim=1)), LAN)
    assert exceeded[ICMPv6TimeExceeded].code == 0 and exceeded[IPv6].dst == H1
    big = only(step(r, LAN, from_host(H1, H1_MAC, UDP(sport=5000, dport=9) / Raw(bytes(1400)))), LAN)
    assert big[ICMPv6PacketTooBig].mtu == 1400 and big[IPv6].src == LAN_PREFIX + "1"


def test_a_spoofed_source_is_dropped():
    r = router6()
    assert step(r, LAN, from_host("2001:db8:9::1", H1_MAC, UDP(sport=5000, dport=9))) == {LAN: [], WAN: []}
    assert r.counters["drop_spoofed_source"] == 1


def test_records_end_after_their_timeout_and_are_told():
    r = router6()
    step(r, LAN, from_host(H1, H1_MAC, UDP(sport=5000, dport=9)), 1.0)
    r.handle_timer(100.0)
    assert len(r.session_infos(100.0)) == 1
    r.handle_timer(1000.0)
    assert r.session_infos(1000.0) == []
    events = []
    while (event := r.next_event()) is not None:
        events.append(type(event).__name__)
    assert "SessionClosed" in events and "SessionOpened" in events
    r.take_outbox(LAN)                                        # the timer's Router Advertisements
    assert step(r, WAN, from_server(UDP(sport=9, dport=5000)), 1001.0) == {LAN: [], WAN: []}


def test_a_closed_ipv6_session_stops_its_replies():
    r = router6()
    step(r, LAN, from_host(H1, H1_MAC, UDP(sport=5000, dport=9)))
    [info] = r.session_infos(1.0)
    assert r.close_session(info.id, 1.0)
    assert step(r, WAN, from_server(UDP(sport=9, dport=5000))) == {LAN: [], WAN: []}


def test_without_a_delegated_prefix_the_lan_gets_no_ipv6():
    r = router6("ds-lite")
    assert r.ra_at_start == []
    assert step(r, LAN, from_host(H1, H1_MAC, UDP(sport=5000, dport=9))) == {LAN: [], WAN: []}
    assert r.counters["drop_ipv6_off"] == 1


def test_ds_lite_with_a_delegated_prefix_routes_its_lan():
    r = router6("ds-lite", delegated_prefix="2001:db8:b:100::/56")
    assert r.ra_at_start[0][ICMPv6NDOptPrefixInfo].prefix == "2001:db8:b:101::"
    host = "2001:db8:b:101::11"
    out = only(step(r, LAN, from_host(host, H1_MAC, UDP(sport=5000, dport=9))), WAN)
    assert out[IPv6].src == host and UDP in out


def test_fragments_in_to_a_lan_host_pass_for_its_flows_only():
    from scapy.layers.inet6 import IPv6ExtHdrFragment, fragment6
    r = router6()
    step(r, LAN, from_host(H1, H1_MAC, UDP(sport=5353, dport=53)))
    reply = IPv6(src=SERVER6, dst=H1, hlim=60) / IPv6ExtHdrFragment(id=9) / UDP(sport=53, dport=5353) / bytes(2000)
    pieces = [Ether(src=GATEWAY_MAC, dst=ROUTER_MAC) / piece for piece in fragment6(reply, 1000)]
    delivered = [only(step(r, WAN, piece), LAN) for piece in pieces]     # forwarded as they are: H1 reassembles
    assert all(p[IPv6ExtHdrFragment].id == 9 for p in delivered) and len(delivered) == len(pieces)
    stranger = IPv6(src="2001:db8:5::66", dst=H1, hlim=60) / IPv6ExtHdrFragment(id=10) / UDP(sport=53, dport=5353) \
        / bytes(2000)
    for piece in fragment6(stranger, 1000):
        assert step(r, WAN, Ether(src=GATEWAY_MAC, dst=ROUTER_MAC) / piece) == {LAN: [], WAN: []}
    assert r.counters["drop_ipv6_unsolicited"] == len(fragment6(stranger, 1000))
