"""An IPv6 WAN: MAP-E (RFC 7597) and DS-Lite (RFC 6333) softwires, Neighbor Discovery (RFC 4861), the
softwire's MTU (RFC 2473 §7, RFC 7597 §8.3) and IPv6 input that lies, with scapy as the oracle."""

from __future__ import annotations

import random

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (ICMPv6EchoReply, ICMPv6EchoRequest, ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6NDOptDstLLAddr,
                                ICMPv6NDOptSrcLLAddr, ICMPv6PacketTooBig, IPv6, IPv6ExtHdrDestOpt,
                                IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting)
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw

from router.config import ConfigError, parse
from router.dataplane.router import LAN, WAN
from router.dataplane.softwire import B4Router, MapERouter
from router.fastpath import make_router
from router.helpers.registry import build_helpers
from router.portset import PortSet
from tests.unit.frames import C1, C2, LAN_MAC, MACS, S1, config, learn, step, wire

ROUTER6, GATEWAY6, BR = "2001:db8:ffff::2", "2001:db8:ffff::1", "2001:db8:ffff::1"
GATEWAY_MAC = "02:00:00:00:06:01"
CE6 = "2001:db8:a:2300:0:c633:64c2:3"
"""RFC 7597 §6: the CE's MAP address: End-user prefix, 16 zero bits, IPv4 198.51.100.194, PSID 3."""
MAP_IPV4 = "198.51.100.194"
PORT_SET = PortSet(offset=6, psid_length=4, psid=3)
MAP_E = {"end_user_prefix": "2001:db8:a:2300::/56", "rule_ipv6_prefix": "2001:db8:a::/48",
         "rule_ipv4_prefix": "198.51.100.192/28", "ea_bits": 8, "psid_offset": 6, "br": BR}
LINK = {"tap": "wan0", "address6": f"{ROUTER6}/64", "gateway6": GATEWAY6}


def wan_config(mode: str, **extra) -> dict:
    wan = {"mode": mode, **LINK, "mac": "02:76:72:01:64:c2", **({"map_e": MAP_E} if mode == "map-e" else {"ds_lite": {"aftr": BR}}), **extra}
    return config(wan=wan) | {"wan": wan}


def softwire(mode: str = "map-e", **extra):
    cfg = parse(wan_config(mode, **extra))
    r = make_router(cfg, build_helpers(cfg), rng=random.Random(1))
    r.start(0.0)
    out = r.take_outbox(WAN)
    assert [Ether(bytes(f[12:]))[ICMPv6ND_NS].tgt for f in out] == [GATEWAY6]     # it asks for its gateway
    r.take_outbox(LAN)
    for ip in (C1, C2):
        learn(r, LAN, ip)
    step(r, WAN, advertisement(GATEWAY6), 0.0)
    return r


def advertisement(target: str, mac: str = GATEWAY_MAC, hlim: int = 255):
    return (Ether(src=mac, dst="02:76:72:01:64:c2") / IPv6(src=target, dst=ROUTER6, hlim=hlim)
            / ICMPv6ND_NA(tgt=target, S=1, O=1) / ICMPv6NDOptDstLLAddr(lladdr=mac))


def from_br(inner, src: str = BR, dst: str = CE6, *extension):
    outer = IPv6(src=src, dst=dst)
    for header in extension:
        outer = outer / header
    return Ether(src=GATEWAY_MAC, dst="02:76:72:01:64:c2") / outer / inner


def only(out: dict, port: int):
    assert len(out[port]) == 1, out
    assert not out[1 - port], out
    return out[port][0]


# -- configuration ---------------------------------------------------------------------------------------

def test_map_e_derives_the_address_port_set_and_mtu_from_the_rule():
    cfg = parse(wan_config("map-e"))
    assert cfg.wan_mode == "map-e"
    assert (cfg.wan.address, cfg.wan.prefix_len, cfg.wan.mtu) == (0xC63364C2, 32, 1460)
    assert cfg.nat.port_set == PORT_SET
    assert str(cfg.wan_link.source) == CE6


@pytest.mark.parametrize("change, message", [
    ({"mode": "mape"}, "wan.mode: one of"),
    ({"address": "198.51.100.1/24"}, "wan.address: not with wan.mode"),
    ({"gateway6": "2001:db8:1::1"}, "wan.gateway6: 2001:db8:1::1 is not another address"),
    ({"mtu": 1200}, "wan.mtu: the IPv6 link's MTU, from 1280"),
    ({"map_e": {**MAP_E, "ea_bits": 2}}, "wan.map_e:"),
    ({"map_e": {**MAP_E, "br": "ff02::1"}}, "wan.map_e.br: ff02::1 is not a unicast address"),
    ({"ds_lite": {"aftr": BR}}, "wan.ds_lite: not with wan.mode = 'map-e'"),
    ({"address6": "2001:db8:ffff::2"}, "wan.address6: give a prefix length"),
])
def test_bad_map_e_configuration_is_refused_in_one_line(change, message):
    data = wan_config("map-e")
    data["wan"] = {**data["wan"], **change}
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        parse(data)


def test_a_port_set_of_ones_own_is_refused_under_map_e():
    data = wan_config("map-e") | {"nat": {"port_set": {"offset": 6, "psid_length": 2, "psid": 1}}}
    with pytest.raises(ConfigError, match="nat.port_set: under wan.mode"):
        parse(data)


def test_an_ipv4_wan_takes_no_ipv6_keys():
    data = config()
    data["wan"]["address6"] = f"{ROUTER6}/64"
    with pytest.raises(ConfigError, match="wan.address6: only with an IPv6 WAN"):
        parse(data)


def test_the_router_made_for_each_mode_and_its_status():
    assert isinstance(softwire("map-e"), MapERouter)
    b4 = softwire("ds-lite")
    assert isinstance(b4, B4Router)
    status = b4.status(1.0)["wan"]
    assert status["mode"] == "ds-lite" and status["passthrough_effective"] is False
    assert status["ds_lite"] == {"aftr": BR, "b4_ipv4": "192.0.0.2", "mtu": 1460}
    assert status["gateway6_mac"] == GATEWAY_MAC
    assert b4.status(1.0)["dataplane"]["path"] == "python"
    plain = make_router(parse(config()), ())
    assert plain.status(0.0)["wan"]["mode"] == "ipv4"


# -- Neighbor Discovery (RFC 4861) ---------------------------------------------------------------------

@pytest.mark.parametrize("target", [ROUTER6, CE6])
def test_a_solicitation_for_each_own_address_is_answered(target):
    r = softwire()
    ns = (Ether(src=GATEWAY_MAC, dst="33:33:ff:00:00:02") / IPv6(src=GATEWAY6, dst="ff02::1:ff00:2", hlim=255)
          / ICMPv6ND_NS(tgt=target) / ICMPv6NDOptSrcLLAddr(lladdr=GATEWAY_MAC))
    na = only(step(r, WAN, ns), WAN)
    assert na[Ether].dst == GATEWAY_MAC and na[IPv6].dst == GATEWAY6 and na[IPv6].hlim == 255
    assert na[ICMPv6ND_NA].tgt == target and na[ICMPv6ND_NA].S == 1 and na[ICMPv6ND_NA].O == 1
    assert na[ICMPv6NDOptDstLLAddr].lladdr == "02:76:72:01:64:c2"
    assert r.counters["nd_advertisements_sent"] == 1


@pytest.mark.parametrize("ns", [
    IPv6(src=GATEWAY6, dst=ROUTER6, hlim=254) / ICMPv6ND_NS(tgt=ROUTER6),                # off the link
    IPv6(src="::", dst=ROUTER6, hlim=255) / ICMPv6ND_NS(tgt=ROUTER6),                    # :: to a unicast address
    IPv6(src="::", dst="ff02::1:ff00:2", hlim=255) / ICMPv6ND_NS(tgt=ROUTER6) / ICMPv6NDOptSrcLLAddr(),
    IPv6(src=GATEWAY6, dst=ROUTER6, hlim=255) / ICMPv6ND_NS(tgt=ROUTER6) / Raw(b"\x01\x00" + bytes(6)),
])
def test_neighbor_discovery_that_rfc_4861_discards_is_dropped_and_counted(ns):
    r = softwire()
    out = step(r, WAN, Ether(src=GATEWAY_MAC, dst="02:76:72:01:64:c2") / ns)
    assert out == {LAN: [], WAN: []}
    assert r.counters["drop_bad_nd"] == 1


def test_a_solicitation_for_another_address_is_not_answered():
    r = softwire()
    ns = IPv6(src=GATEWAY6, dst="ff02::1:ff00:9", hlim=255) / ICMPv6ND_NS(tgt="2001:db8:ffff::9")
    assert step(r, WAN, Ether(src=GATEWAY_MAC, dst="33:33:ff:00:00:09") / ns) == {LAN: [], WAN: []}


def test_frames_wait_for_the_gateway_and_go_once_it_answers():
    cfg = parse(wan_config("map-e"))
    r = make_router(cfg, (), rng=random.Random(1))
    r.start(0.0)
    r.take_outbox(WAN)
    learn(r, LAN, C1)
    assert step(r, LAN, Ether(src=MACS[C1], dst=LAN_MAC) / IP(src=C1, dst=S1) / UDP(sport=5000, dport=53),
                0.5)[WAN] == []                              # its solicitation from start() is still pending
    r.handle_timer(1.0)
    retry = r.take_outbox(WAN)
    assert [Ether(bytes(f[12:]))[IPv6].dst for f in retry] == ["ff02::1:ff00:1"]
    out = step(r, WAN, advertisement(GATEWAY6), 1.1)
    packet = only(out, WAN)
    assert packet[Ether].dst == GATEWAY_MAC and packet[IP].src == MAP_IPV4


def test_an_unanswered_gateway_drops_what_waited_and_says_so():
    cfg = parse(wan_config("map-e"))
    r = make_router(cfg, (), rng=random.Random(1))
    r.start(0.0)
    learn(r, LAN, C1)
    step(r, LAN, Ether(src=MACS[C1], dst=LAN_MAC) / IP(src=C1, dst=S1) / UDP(sport=5000, dport=53), 0.1)
    for now in (1.0, 2.0, 3.0):
        r.handle_timer(now)
    assert r.counters["drop_nd_unresolved"] == 1
    assert r.counters["nd_solicitations_sent"] == 3


def test_the_router_answers_ipv6_echo_on_its_addresses():
    r = softwire()
    request = Ether(src=GATEWAY_MAC, dst="02:76:72:01:64:c2") / IPv6(src=GATEWAY6, dst=CE6) / \
        ICMPv6EchoRequest(id=7, seq=9, data=b"ping")
    reply = only(step(r, WAN, request), WAN)
    assert reply[IPv6].src == CE6 and reply[ICMPv6EchoReply].id == 7 and reply[ICMPv6EchoReply].data == b"ping"


# -- MAP-E (RFC 7597 §8) -------------------------------------------------------------------------------

def test_map_e_translates_into_the_port_set_and_encapsulates_to_the_br():
    r = softwire()
    out = step(r, LAN, Ether(src=MACS[C1], dst=LAN_MAC) / IP(src=C1, dst=S1, tos=0xB8) / UDP(sport=5000, dport=53)
               / Raw(b"q" * 20))
    packet = only(out, WAN)
    outer = packet[IPv6]
    assert (outer.src, outer.dst, outer.nh, outer.hlim, outer.tc, outer.plen) == (CE6, BR, 4, 64, 0xB8, 48)
    assert packet[Ether].type == 0x86DD and packet[Ether].dst == GATEWAY_MAC
    inner = packet[IP]
    assert inner.src == MAP_IPV4 and inner.dst == S1 and inner.ttl == 63
    assert inner[UDP].sport in PORT_SET
    assert r.counters["softwire_out"] == 1


def test_map_e_takes_the_brs_reply_to_the_client():
    r = softwire()
    out = step(r, LAN, Ether(src=MACS[C1], dst=LAN_MAC) / IP(src=C1, dst=S1) / TCP(sport=40000, dport=80, flags="S"))
    port = only(out, WAN)[TCP].sport
    reply = IP(src=S1, dst=MAP_IPV4) / TCP(sport=80, dport=port, flags="SA")
    back = only(step(r, WAN, from_br(reply)), LAN)
    assert back[IP].dst == C1 and back[TCP].dport == 40000 and back[Ether].dst == MACS[C1]
    assert r.counters["softwire_in"] == 1


def test_a_reply_behind_a_hop_by_hop_header_is_taken():
    r = softwire()
    port = only(step(r, LAN, Ether(src=MACS[C1], dst=LAN_MAC) / IP(src=C1, dst=S1) / UDP(sport=5000, dport=53)),
                WAN)[UDP].sport
    back = step(r, WAN, from_br(IP(src=S1, dst=MAP_IPV4) / UDP(sport=53, dport=port), BR, CE6,
                                IPv6ExtHdrHopByHop(nh=60), IPv6ExtHdrDestOpt(nh=4)))
    assert only(back, LAN)[IP].dst == C1


@pytest.mark.parametrize("src, dst", [("2001:db8:ffff::66", CE6), (BR, ROUTER6)])
def test_ipv4_in_ipv6_from_anyone_but_the_br_is_dropped_and_counted(src, dst):
    r = softwire()
    step(r, LAN, Ether(src=MACS[C1], dst=LAN_MAC) / IP(src=C1, dst=S1) / UDP(sport=5000, dport=53))
    port = next(iter(r.nat.out_sessions.values())).outside_port
    out = step(r, WAN, from_br(IP(src=S1, dst=MAP_IPV4) / UDP(sport=53, dport=port), src, dst))
    assert out == {LAN: [], WAN: []}
    assert r.counters["drop_softwire_foreign"] == 1


@pytest.mark.parametrize("packet, reason", [
    (from_br(IP(src=S1, dst=MAP_IPV4) / UDP(), BR, CE6, IPv6ExtHdrHopByHop(nh=60, len=40), IPv6ExtHdrDestOpt(nh=4)),
     "bad_ipv6_header"),                                                        # a header past the payload
    (from_br(IP(src=S1, dst=MAP_IPV4) / UDP(), BR, CE6, IPv6ExtHdrDestOpt(nh=0), IPv6ExtHdrHopByHop(nh=4)),
     "bad_ipv6_header"),                                                        # hop-by-hop, not first
    (from_br(IP(src=S1, dst=MAP_IPV4) / UDP(), BR, CE6, IPv6ExtHdrRouting(nh=4, segleft=1, addresses=[CE6])),
     "bad_ipv6_header"),                                                        # a route onward through us
    (from_br(IP(src=S1, dst=MAP_IPV4) / UDP(), BR, CE6, *[IPv6ExtHdrDestOpt(nh=60)] * 9, IPv6ExtHdrDestOpt(nh=4)),
     "bad_ipv6_header"),                                                        # a chain with no end in sight
    (from_br(IP(src=S1, dst=MAP_IPV4) / UDP(), BR, CE6, IPv6ExtHdrFragment(nh=4, m=1)), "ipv6_fragment"),
    (Ether(src=GATEWAY_MAC, dst="02:76:72:01:64:c2") / IPv6(src=BR, dst=CE6, nh=6) / TCP(), "unsupported_protocol"),
    (Ether(src=GATEWAY_MAC, dst="02:76:72:01:64:c2") / IP(src=S1, dst=MAP_IPV4) / UDP(), "not_ipv6"),
    (Ether(src=GATEWAY_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc=S1, pdst=MAP_IPV4), "not_ipv6"),
    (Ether(src=GATEWAY_MAC, dst="02:76:72:01:64:c2") / IPv6(src=BR, dst=CE6, nh=4)
     / Raw(bytes(IPv6(src=GATEWAY6, dst=CE6) / UDP())), "bad_ip_header"),   # next header 4, and IPv6 inside
])
def test_ipv6_that_lies_is_dropped_with_its_reason(packet, reason):
    r = softwire()
    assert step(r, WAN, packet) == {LAN: [], WAN: []}
    assert r.counters["drop_" + reason] == 1


def test_a_payload_length_past_the_frame_and_a_cut_inner_packet_are_dropped():
    r = softwire()
    frame = wire(from_br(IP(src=S1, dst=MAP_IPV4) / UDP(sport=53, dport=4000) / Raw(bytes(40))))
    frame[12 + 14 + 4:12 + 14 + 6] = (2000).to_bytes(2, "big")
    r.receive_frame(WAN, frame, 1.0)
    assert r.counters["drop_bad_ipv6_header"] == 1
    cut = wire(from_br(IP(src=S1, dst=MAP_IPV4) / UDP(sport=53, dport=4000) / Raw(bytes(40))))
    cut[12 + 14 + 4:12 + 14 + 6] = (30).to_bytes(2, "big")        # the IPv6 payload ends inside the datagram
    r.receive_frame(WAN, cut, 1.0)
    assert r.counters["drop_bad_ip_header"] == 1
    assert r.take_outbox(LAN) == []


def test_gre_and_esp_have_no_port_set_to_pass_through_under_map_e():
    r = softwire()
    for proto in (47, 50):
        out = step(r, LAN, Ether(src=MACS[C1], dst=LAN_MAC) / IP(src=C1, dst=S1, proto=proto) / Raw(bytes(16)))
        assert out[WAN] == []
    assert r.counters["drop_portless_under_port_set"] == 2


def test_a_full_size_df_segment_is_refused_with_the_softwires_mtu():
    """RFC 7597 §8.3.1, RFC 2473 §7.1: 1500 bytes do not fit in 1460 after the IPv6 header; the sender is told."""
    r = softwire()
    syn = Ether(src=MACS[C1], dst=LAN_MAC) / IP(src=C1, dst=S1, flags="DF") / TCP(sport=40000, dport=80, flags="S")
    step(r, LAN, syn)
    big = Ether(src=MACS[C1], dst=LAN_MAC) / IP(src=C1, dst=S1, flags="DF") / TCP(sport=40000, dport=80, flags="A") \
        / Raw(bytes(1460))
    error = only(step(r, LAN, big), LAN)
    assert (error[ICMP].type, error[ICMP].code, error[ICMP].nexthopmtu) == (3, 4, 1460)


def test_a_datagram_that_may_be_fragmented_is_cut_before_encapsulation():
    r = softwire()
    out = step(r, LAN, Ether(src=MACS[C1], dst=LAN_MAC) / IP(src=C1, dst=S1) / UDP(sport=5000, dport=9)
               / Raw(bytes(1472)))
    assert len(out[WAN]) == 2
    assert all(len(p[IPv6]) <= 1500 and p[IPv6].nh == 4 for p in out[WAN])
    assert r.counters["softwire_out"] == 2


def test_packet_too_big_for_our_softwire_lowers_its_mtu():
    r = softwire()
    sent = only(step(r, LAN, Ether(src=MACS[C1], dst=LAN_MAC) / IP(src=C1, dst=S1) / UDP(sport=5000, dport=9)), WAN)
    too_big = Ether(src=GATEWAY_MAC, dst="02:76:72:01:64:c2") / IPv6(src="2001:db8:ffff::99", dst=CE6) / \
        ICMPv6PacketTooBig(mtu=1400) / bytes(sent[IPv6])
    step(r, WAN, too_big)
    assert r.mtus[WAN] == 1360
    big = Ether(src=MACS[C1], dst=LAN_MAC) / IP(src=C1, dst=S1, flags="DF") / UDP(sport=5000, dport=9) / bytes(1400)
    error = only(step(r, LAN, big), LAN)
    assert error[ICMP].nexthopmtu == 1360


# -- DS-Lite (RFC 6333 §5) --------------------------------------------------------------------------------

def test_a_b4_sends_the_lans_ipv4_untranslated_to_the_aftr():
    r = softwire("ds-lite")
    packet = only(step(r, LAN, Ether(src=MACS[C1], dst=LAN_MAC) / IP(src=C1, dst=S1) / TCP(sport=40000, dport=1723,
                                                                                             flags="S")), WAN)
    assert (packet[IPv6].src, packet[IPv6].dst) == (ROUTER6, BR)
    assert (packet[IP].src, packet[IP].dst, packet[IP].ttl, packet[TCP].sport) == (C1, S1, 63, 40000)
    assert len(r.nat) == 0                     # no NAT44 of its own, no helper at work
    back = only(step(r, WAN, from_br(IP(src=S1, dst=C1) / TCP(sport=1723, dport=40000, flags="SA"), BR, ROUTER6)),
                LAN)
    assert back[IP].dst == C1 and back[Ether].dst == MACS[C1]


def test_a_b4_passes_gre_as_it_is():
    r = softwire("ds-lite")
    packet = only(step(r, LAN, Ether(src=MACS[C1], dst=LAN_MAC) / IP(src=C1, dst=S1, proto=47) / Raw(bytes(16))), WAN)
    assert packet[IP].proto == 47 and packet[IP].src == C1


def test_a_b4_takes_nothing_for_other_addresses_from_the_aftr():
    r = softwire("ds-lite")
    out = step(r, WAN, from_br(IP(src=S1, dst="10.0.0.1") / UDP(), BR, ROUTER6))
    assert out == {LAN: [], WAN: []}
    assert r.counters["drop_not_routable"] == 1


def test_a_b4_answers_pings_to_its_own_ipv4_address():
    r = softwire("ds-lite")
    reply = only(step(r, WAN, from_br(IP(src=S1, dst="192.0.0.2") / ICMP(id=3), BR, ROUTER6)), WAN)
    assert reply[IPv6].dst == BR and reply[IP].src == "192.0.0.2" and reply[ICMP].type == 0


# -- IPv6 fragments (RFC 8200 §4.5, RFC 2473 §7) -------------------------------------------------------------

def _fragments(inner, size: int = 600, ident: int = 7):
    from scapy.layers.inet6 import fragment6
    packet = IPv6(src=BR, dst=CE6) / IPv6ExtHdrFragment(nh=4, id=ident) / inner
    return [Ether(src=GATEWAY_MAC, dst="02:76:72:01:64:c2") / piece for piece in fragment6(packet, size)]


def test_a_softwire_packet_in_ipv6_fragments_is_reassembled_and_taken():
    r = softwire()
    port = only(step(r, LAN, Ether(src=MACS[C1], dst=LAN_MAC) / IP(src=C1, dst=S1) / UDP(sport=5000, dport=53)),
                WAN)[UDP].sport
    pieces = _fragments(IP(src=S1, dst=MAP_IPV4) / UDP(sport=53, dport=port) / Raw(bytes(range(256)) * 5))
    assert len(pieces) == 3
    for piece in reversed(pieces[1:]):                      # out of order, as a path may deliver them
        assert step(r, WAN, piece) == {LAN: [], WAN: []}
    back = only(step(r, WAN, pieces[0]), LAN)
    assert back[IP].dst == C1 and bytes(back[UDP].payload) == bytes(range(256)) * 5
    assert r.counters["ipv6_reassembled"] == 1 and r.counters["softwire_in"] == 1


def test_overlapping_fragments_give_the_packet_up():
    r = softwire()
    pieces = _fragments(IP(src=S1, dst=MAP_IPV4) / UDP(sport=53, dport=4000) / Raw(bytes(1200)))
    step(r, WAN, pieces[0])
    overlap = pieces[1].copy()
    overlap[IPv6ExtHdrFragment].offset -= 1                   # 8 bytes back: over the first piece's end
    assert step(r, WAN, overlap) == {LAN: [], WAN: []}
    assert r.counters["drop_ipv6_fragment"] == 1 and not r.reassembly.packets


def test_a_packet_whose_pieces_never_all_come_is_given_up_after_60_seconds():
    r = softwire()
    step(r, WAN, _fragments(IP(src=S1, dst=MAP_IPV4) / UDP(sport=53, dport=4000) / Raw(bytes(1200)))[0], 1.0)
    r.handle_timer(30.0)
    assert r.counters["drop_ipv6_fragment"] == 0
    r.handle_timer(61.5)
    assert r.counters["drop_ipv6_fragment"] == 1 and not r.reassembly.packets


def test_a_full_size_ipsec_packet_in_udp_is_refused_with_the_softwires_mtu():
    """NAT-T ESP in UDP 4500 (RFC 3948) as strongSwan sends it, DF set, 1500 bytes: told the softwire's 1460."""
    r = softwire()
    esp = Ether(src=MACS[C1], dst=LAN_MAC) / IP(src=C1, dst=S1, flags="DF") / UDP(sport=4500, dport=4500) \
        / Raw(b"\x00\x00\x10\x00" + bytes(1468))
    error = only(step(r, LAN, esp), LAN)
    assert (error[ICMP].type, error[ICMP].code, error[ICMP].nexthopmtu) == (3, 4, 1460)
    smaller = Ether(src=MACS[C1], dst=LAN_MAC) / IP(src=C1, dst=S1, flags="DF") / UDP(sport=4500, dport=4500) \
        / Raw(b"\x00\x00\x10\x00" + bytes(1428))
    assert len(only(step(r, LAN, smaller), WAN)[IPv6]) == 1500           # what fits goes, whole
