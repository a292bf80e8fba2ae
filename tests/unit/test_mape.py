"""MAP-E (RFC 7597) and RFC 2473 IPv4-in-IPv6: the RFC's Appendix A examples, every refusal, and properties.

The example numbers are RFC 7597's own (Appendix A, and Appendix B.2 for a port set), quoted in the docstrings.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest
from hypothesis import given, settings, strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop
from scapy.packet import Raw

from router.mape import (MAX_EA_BITS, MapRule, Refused, RefusalReason, ce_address_for, decapsulate, derive_ce,
                         encapsulate, encapsulated_mtu)
from router.portset import PortSet

BR = IPv6Address("2001:db8:ffff::1")
"""Appendix A, Examples 2 and 3: "IPv6 address of MAP BR: 2001:db8:ffff::1"."""
EXAMPLE_1_RULE = MapRule(IPv6Network("2001:db8::/40"), IPv4Network("192.0.2.0/24"), ea_bits_length=16)
EXAMPLE_1_PREFIX = IPv6Network("2001:db8:0012:3400::/56")
EXAMPLE_1_CE = IPv6Address("2001:db8:0012:3400:0000:c000:0212:0034")
SHARED_ADDRESS = IPv4Address("192.0.2.18")
NO_EA_BITS = dict(ipv6_prefix=EXAMPLE_1_PREFIX, ipv4_prefix=IPv4Network("192.0.2.18/32"), ea_bits_length=0)
"""Appendix A, Examples 4 and 5: BMR {2001:db8:0012:3400::/56, 192.0.2.18/32, 0}."""


# --- RFC 7597 Appendix A ---------------------------------------------------------------------------------------

def test_example_1_bmr_gives_the_ce_its_address_psid_and_map_address():
    """Appendix A, Example 1 - Basic Mapping Rule.

    "End-user IPv6 prefix: 2001:db8:0012:3400::/56", BMR {2001:db8:0000::/40, 192.0.2.0/24, 16}, "PSID length:
    (16 - (32 - 24) = 8 (sharing ratio of 256)", "PSID offset: 6 (default)"; then "EA bits offset: 40", p = "Length
    of IPv4 address (32) - IPv4 prefix length (24) = 8", "IPv4 address: 192.0.2.18 (0xc0000212)", "PSID start:
    40 + p = 40 + 8 = 48", "PSID length: o - p = (56 - 40) - 8 = 8", "PSID: 0x34", and "IPv6 address of MAP CE:
    2001:db8:0012:3400:0000:c000:0212:0034".
    """
    rule = EXAMPLE_1_RULE
    assert rule.psid_offset == 6
    assert (rule.ipv4_suffix_length, rule.ea_psid_length, rule.psid_length, rule.sharing_ratio) == (8, 8, 8, 256)
    ce = derive_ce(rule, EXAMPLE_1_PREFIX)
    # 2001:0db8:00|12:34|00::  bits 40-55 (after the /40) are the octets 0x12 0x34
    assert ce.ea_bits == 0x1234
    # the first p = 8 EA bits, 0x12 = 18, follow 192.0.2.0/24; the last q = 8 are the PSID
    assert ce.ipv4_address == SHARED_ADDRESS and int(ce.ipv4_address) == 0xC0000212
    assert (ce.psid, ce.psid_length) == (0x34, 8)
    # the /56, a zero subnet ID up to bit 64, then the interface ID 0000 : c000:0212 (the address) : 0034 (the PSID)
    assert ce.map_ipv6_address == EXAMPLE_1_CE
    assert str(ce.map_ipv6_address) == "2001:db8:12:3400:0:c000:212:34"


def test_example_1_port_set_is_63_ranges_of_4_ports():
    """Appendix A, Example 1: "Available ports (63 ranges): 1232-1235, 2256-2259, ...... , 63696-63699, 64720-64723"."""
    ports = derive_ce(EXAMPLE_1_RULE, EXAMPLE_1_PREFIX).port_set
    assert ports == PortSet(offset=6, psid_length=8, psid=0x34)
    ranges = ports.ranges()
    assert len(ranges) == 63 and ports.size() == 63 * 4
    assert ranges[:2] == [(1232, 1235), (2256, 2259)] and ranges[-2:] == [(63696, 63699), (64720, 64723)]
    # 1232 = 0b000001_00110100_00: A = 1, PSID = 0x34, j = 0
    assert all(port in ports for port in (1232, 1233, 1235, 2256, 63699, 64720, 64723))
    assert not any(port in ports for port in (1231, 1236, 2255, 2260, 64719, 64724, 65535))
    # 208 = 0b000000_00110100_00 carries PSID 0x34 but A = 0: the system ports are no CE's (§5.1)
    assert 208 not in ports


def test_example_2_br_finds_the_ce_from_destination_address_and_port():
    """Appendix A, Example 2 - BR: from 1.2.3.4 port 80 to 192.0.2.18 (0xc0000212) port 1232, with the FMR
    {2001:db8::/40, 192.0.2.0/24, 16}: "IPv4 suffix bits (p): 32 - 24 = 8 (18 (0x12))", "PSID length: 8",
    "PSID: 0x34 (1232)"; "IPv6 source address: 2001:db8:ffff::1", "IPv6 destination address:
    2001:db8:0012:3400:0000:c000:0212:0034".
    """
    # 1232 = 0b000001_00110100_00: after a = 6 offset bits, the k = 8 PSID bits are 0x34
    destination = ce_address_for(EXAMPLE_1_RULE, SHARED_ADDRESS, 1232)
    assert destination == EXAMPLE_1_CE
    inner = bytes(IP(src="1.2.3.4", dst="192.0.2.18") / UDP(sport=80, dport=1232) / b"reply")
    tunnel = IPv6(encapsulate(inner, BR, destination))
    assert (tunnel.src, tunnel.dst) == ("2001:db8:ffff::1", "2001:db8:12:3400:0:c000:212:34")
    assert decapsulate(bytes(tunnel), expected_src=BR) == inner


def test_example_3_ce_tunnels_outside_traffic_to_the_br():
    """Appendix A, Example 3 (headed "Forwarding Mapping Rule"): a host behind the CE of the previous examples
    reaching 1.2.3.4: "IPv4 source address: 192.0.2.18", "IPv4 destination address: 1.2.3.4", "IPv4 source port:
    1232", "IPv4 destination port: 80", "MAP CE IPv6 source address: 2001:db8:0012:3400:0000:c000:0212:0034",
    "IPv6 destination address: 2001:db8:ffff::1".
    """
    ce = derive_ce(EXAMPLE_1_RULE, EXAMPLE_1_PREFIX)
    assert 1232 in ce.port_set
    inner = bytes(IP(src=str(ce.ipv4_address), dst="1.2.3.4") / UDP(sport=1232, dport=80))
    tunnel = IPv6(encapsulate(inner, ce.map_ipv6_address, BR))
    assert (tunnel.src, tunnel.dst, tunnel.nh) == ("2001:db8:12:3400:0:c000:212:34", "2001:db8:ffff::1", 4)
    assert (tunnel[IP].src, tunnel[IP].dst, tunnel[UDP].sport, tunnel[UDP].dport) == ("192.0.2.18", "1.2.3.4", 1232, 80)


def test_example_4_no_ea_bits_and_no_sharing():
    """Appendix A, Example 4 - Rule with no embedded address bits and no address sharing: BMR
    {2001:db8:0012:3400::/56, 192.0.2.18/32, 0}; "PSID length: 0 (sharing ratio is 1)"; "IPv4 address: 192.0.2.18
    (0xc0000212)"; "IPv6 address of MAP CE: 2001:db8:0012:3400:0000:c000:0212:0000".
    """
    rule = MapRule(**NO_EA_BITS)
    assert (rule.ipv4_suffix_length, rule.psid_length, rule.sharing_ratio) == (0, 0, 1)
    ce = derive_ce(rule, EXAMPLE_1_PREFIX)
    assert (ce.ea_bits, ce.ipv4_address, ce.psid) == (0, SHARED_ADDRESS, 0)
    assert ce.map_ipv6_address == IPv6Address("2001:db8:0012:3400:0000:c000:0212:0000")
    assert ce.port_set.ranges() == [(1, 65535)]  # an address of its own: every port
    assert ce_address_for(rule, SHARED_ADDRESS, 80) == ce.map_ipv6_address


def test_example_5_no_ea_bits_with_a_provisioned_psid():
    """Appendix A, Example 5 - Rule with no embedded address bits and address sharing (sharing ratio of 256): BMR
    {2001:db8:0012:3400::/56, 192.0.2.18/32, 0}; "PSID length: 8 (from DHCP; sharing ratio of 256)", "PSID offset: 6
    (default)", "PSID: 0x34 (from DHCP)"; "Available ports (63 ranges): 1232-1235, 2256-2259, ...... , 63696-63699,
    64720-64723"; "IPv6 address of MAP CE: 2001:db8:0012:3400:0000:c000:0212:0034".
    """
    rule = MapRule(**NO_EA_BITS, provisioned_psid_length=8)
    assert (rule.ea_psid_length, rule.psid_length, rule.sharing_ratio) == (0, 8, 256)
    ce = derive_ce(rule, EXAMPLE_1_PREFIX, psid=0x34)
    assert (ce.ipv4_address, ce.psid, ce.psid_length) == (SHARED_ADDRESS, 0x34, 8)
    assert ce.map_ipv6_address == EXAMPLE_1_CE
    ranges = ce.port_set.ranges()
    assert len(ranges) == 63 and ranges[:2] == [(1232, 1235), (2256, 2259)]
    assert ranges[-2:] == [(63696, 63699), (64720, 64723)]
    assert ce_address_for(rule, SHARED_ADDRESS, 2257) == EXAMPLE_1_CE


def test_gma_example_1_is_the_port_set_of_psid_0():
    """Appendix B.2, Example 1, "with offset = 6 (a = 6)": R = 256, PSID = 0, k = 8: "Available ports (63 ranges):
    1024-1027, 2048-2051, ...... , 63488-63491, 64512-64515".  Under Example 1's rule the PSID is 0 for a prefix
    whose EA bits are 0x1200: 192.0.2.18 again, but another quarter of its ports.
    """
    ce = derive_ce(EXAMPLE_1_RULE, IPv6Network("2001:db8:0012:0000::/56"))
    assert (ce.ea_bits, ce.ipv4_address, ce.psid) == (0x1200, SHARED_ADDRESS, 0)
    assert ce.map_ipv6_address == IPv6Address("2001:db8:12::c000:212:0")
    ranges = ce.port_set.ranges()
    assert len(ranges) == 63 and ranges[:2] == [(1024, 1027), (2048, 2051)]
    assert ranges[-2:] == [(63488, 63491), (64512, 64515)]


def test_a_longer_end_user_prefix_keeps_its_own_bits():
    """§5.2: n + o may be shorter than the End-user prefix, whose further bits stay; past 64 bits they overwrite
    the interface identifier's leading bits (§6)."""
    as_64 = derive_ce(EXAMPLE_1_RULE, IPv6Network("2001:db8:0012:3456::/64"))
    assert (as_64.ea_bits, as_64.psid) == (0x1234, 0x34)
    assert as_64.map_ipv6_address == IPv6Address("2001:db8:12:3456:0:c000:212:34")
    as_72 = derive_ce(EXAMPLE_1_RULE, IPv6Network("2001:db8:0012:3400:ab00::/72"))
    assert as_72.map_ipv6_address == IPv6Address("2001:db8:12:3400:ab00:c000:212:34")


# --- validation ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("changes, message", [
    (dict(ea_bits_length=49), "EA-bits length 49: from 0 to 48"),
    (dict(ea_bits_length=-1), "EA-bits length -1: from 0 to 48"),
    (dict(ipv6_prefix=IPv6Network("2001:db8::/56")), "ends at bit 72"),        # 56 + 16 > 64
    (dict(ipv4_prefix=IPv4Network("192.0.0.0/16"), ea_bits_length=8), "delegates an IPv4 prefix"),  # p = 16 > o = 8
    (dict(ea_bits_length=20), r"PSID length 12 \(o - p = 20 - 8\)"),         # k = 12 > 16 - 6
    (dict(psid_offset=16), "psid_offset 16: from 0 to 15"),
    (dict(provisioned_psid_length=4), "disagrees with the 8 PSID bits"),
    (dict(NO_EA_BITS, provisioned_psid_length=11), r"PSID length 11 \(provisioned\)"),
])
def test_a_rule_that_cannot_work_is_refused_naming_the_problem(changes, message):
    fields = dict(ipv6_prefix=EXAMPLE_1_RULE.ipv6_prefix, ipv4_prefix=EXAMPLE_1_RULE.ipv4_prefix, ea_bits_length=16)
    with pytest.raises(ValueError, match=message):
        MapRule(**(fields | changes))


def test_rules_from_text():
    assert MapRule.from_strings("2001:db8::/40", "192.0.2.0/24", 16) == EXAMPLE_1_RULE
    with pytest.raises(ValueError, match="host bits"):
        MapRule.from_strings("2001:db8::1/40", "192.0.2.0/24", 16)
    with pytest.raises(TypeError, match="from_strings"):
        MapRule("2001:db8::/40", "192.0.2.0/24", 16)


@pytest.mark.parametrize("rule, prefix, psid, message", [
    (EXAMPLE_1_RULE, IPv6Network("2001:db9:12:3400::/56"), None, "is not inside the Rule IPv6 prefix 2001:db8::/40"),
    (EXAMPLE_1_RULE, IPv6Network("2001:db8:12::/48"), None, "shorter than the /56"),
    (EXAMPLE_1_RULE, EXAMPLE_1_PREFIX, 0x35, "PSID 0x35 disagrees with the PSID 0x34"),
    (MapRule(**NO_EA_BITS, provisioned_psid_length=8), EXAMPLE_1_PREFIX, None, "give the provisioned PSID"),
    (MapRule(**NO_EA_BITS, provisioned_psid_length=8), EXAMPLE_1_PREFIX, 256, "from 0 to 255"),
    (MapRule(**NO_EA_BITS), EXAMPLE_1_PREFIX, 1, "from 0 to 0"),
])
def test_an_end_user_prefix_or_psid_that_does_not_fit_is_refused(rule, prefix, psid, message):
    with pytest.raises(ValueError, match=message):
        derive_ce(rule, prefix, psid)


def test_br_lookup_refuses_what_no_ce_owns():
    with pytest.raises(ValueError, match="not inside the Rule IPv4 prefix"):
        ce_address_for(EXAMPLE_1_RULE, IPv4Address("198.51.100.18"), 1232)
    with pytest.raises(ValueError, match="port 80 is in no CE's port set"):
        ce_address_for(EXAMPLE_1_RULE, SHARED_ADDRESS, 80)
    with pytest.raises(ValueError, match="from 0 to 65535"):
        ce_address_for(EXAMPLE_1_RULE, SHARED_ADDRESS, 65536)


# --- RFC 2473 encapsulation -----------------------------------------------------------------------------------

INNER = bytes(IP(src="1.2.3.4", dst="192.0.2.18", tos=0xB9, ttl=61, id=7) / UDP(sport=80, dport=1232) / b"answer")
GOOD = encapsulate(INNER, BR, EXAMPLE_1_CE)


def checksums_verify(packet: IP) -> bool:
    """scapy recomputes the IPv4 and UDP checksums and finds the ones the packet carries."""
    again = packet.copy()
    del again.chksum
    del again[UDP].chksum
    rebuilt = IP(bytes(again))
    return rebuilt.chksum == packet.chksum and rebuilt[UDP].chksum == packet[UDP].chksum


def test_encapsulation_round_trip_checked_by_scapy():
    outer = encapsulate(INNER, EXAMPLE_1_CE, BR, hop_limit=63)
    parsed = IPv6(outer)
    header = (parsed.version, parsed.tc, parsed.fl, parsed.plen, parsed.nh, parsed.hlim)
    assert header == (6, 0xB9, 0, len(INNER), 4, 63)
    assert (parsed.src, parsed.dst) == (str(EXAMPLE_1_CE), str(BR))
    assert outer == bytes(IPv6(src=str(EXAMPLE_1_CE), dst=str(BR), tc=0xB9, hlim=63) / IP(INNER))
    assert bytes(parsed[IP]) == INNER and checksums_verify(parsed[IP])
    inner = decapsulate(outer, expected_src=EXAMPLE_1_CE)
    assert inner == INNER and checksums_verify(IP(inner))


def test_traffic_class_is_the_tos_unless_given_and_hop_limit_defaults_to_64():
    assert IPv6(GOOD).tc == 0xB9 and IPv6(GOOD).hlim == 64
    assert IPv6(encapsulate(INNER, BR, EXAMPLE_1_CE, traffic_class=0)).tc == 0
    assert IPv6(encapsulate(INNER, BR, EXAMPLE_1_CE, traffic_class=0x2E << 2)).tc == 0xB8


@pytest.mark.parametrize("packet, kwargs", [
    (bytes(IPv6()), {}), (INNER[:19], {}), (INNER, dict(hop_limit=0)), (INNER, dict(traffic_class=256)),
])
def test_encapsulate_takes_only_ipv4_and_sane_header_values(packet, kwargs):
    with pytest.raises(ValueError):
        encapsulate(packet, BR, EXAMPLE_1_CE, **kwargs)


def tunnel(payload: bytes, next_header: int = 4, payload_length: int | None = None, src: IPv6Address = BR) -> bytes:
    """An IPv6 header built by scapy (not by the module under test), ahead of ``payload`` as it is."""
    return bytes(IPv6(src=str(src), dst=str(EXAMPLE_1_CE), nh=next_header, plen=payload_length) / Raw(payload))


def with_octet(packet: bytes, at: int, value: int) -> bytes:
    return packet[:at] + bytes([value]) + packet[at + 1:]


REFUSALS = {
    "bare IPv4": (INNER, "not_ipv6"),
    "version 5": (with_octet(GOOD, 0, 0x50), "not_ipv6"),
    "empty": (b"", "truncated"),
    "39 bytes": (GOOD[:39], "truncated"),
    "hop-by-hop, then IPv4": (bytes(IPv6(src=str(BR), dst=str(EXAMPLE_1_CE)) / IPv6ExtHdrHopByHop() / IP(INNER)),
                              "wrong_next_header"),
    "encapsulation limit, then IPv4": (bytes(IPv6(src=str(BR), dst=str(EXAMPLE_1_CE)) / IPv6ExtHdrDestOpt()
                                             / IP(INNER)), "wrong_next_header"),
    "IPv6 in IPv6": (tunnel(bytes(IPv6()), next_header=41), "wrong_next_header"),
    "UDP": (tunnel(bytes(UDP()), next_header=17), "wrong_next_header"),
    "payload length one too many": (tunnel(INNER, payload_length=len(INNER) + 1), "payload_length"),
    "payload length with no payload": (tunnel(b"", payload_length=20), "payload_length"),
    "from a CE, not the BR": (tunnel(INNER, src=IPv6Address("2001:db8:34:5600:0:c000:234:56")), "not_from_br"),
    "IPv6 inside": (tunnel(bytes(IPv6())), "inner_not_ipv4"),
    "IHL 4": (tunnel(with_octet(INNER, 0, 0x44)), "inner_not_ipv4"),
    "total length under the header": (tunnel(INNER[:2] + (19).to_bytes(2, "big") + INNER[4:]), "inner_not_ipv4"),
    "nothing inside": (tunnel(b""), "inner_truncated"),
    "cut short of its total length": (tunnel(INNER[:-3]), "inner_truncated"),
    "IHL 15 over 34 bytes": (tunnel(with_octet(INNER, 0, 0x4F)), "inner_truncated"),
    "half an IPv4 header": (tunnel(INNER[:12]), "inner_truncated"),
}


@pytest.mark.parametrize("packet, reason", REFUSALS.values(), ids=REFUSALS.keys())
def test_decapsulate_refuses_with_a_reason(packet, reason):
    with pytest.raises(Refused) as refused:
        decapsulate(packet, expected_src=BR)
    assert refused.value.reason == reason and isinstance(refused.value, ValueError)
    assert str(refused.value).startswith(f"{reason}: ")


def test_every_refusal_reason_is_exercised():
    assert {reason for _, reason in REFUSALS.values()} == set(RefusalReason)


def test_padding_after_either_packet_is_dropped():
    assert decapsulate(GOOD + bytes(6), expected_src=BR) == INNER  # past the IPv6 payload length: link padding
    assert decapsulate(tunnel(INNER + b"xyz")) == INNER              # past the inner total length
    assert decapsulate(tunnel(INNER, src=IPv6Address("2001:db8::99"))) == INNER  # no source expected


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=120), st.binary(max_size=80).map(lambda tail: GOOD[:40] + tail)))
def test_decapsulate_returns_ipv4_or_refuses_whatever_arrives(packet):
    try:
        inner = decapsulate(packet)
    except Refused as refused:
        assert refused.reason in set(RefusalReason)
    else:
        assert inner[0] >> 4 == 4 and len(inner) == int.from_bytes(inner[2:4], "big") >= (inner[0] & 15) * 4 >= 20


def test_encapsulated_mtu_leaves_room_for_the_ipv6_header():
    assert encapsulated_mtu(1500) == 1460 and encapsulated_mtu(1280) == 1240
    with pytest.raises(ValueError, match="at least 1280"):
        encapsulated_mtu(1279)


# --- properties: what a CE derives, a BR finds again ---------------------------------------------------------

@st.composite
def rules_and_prefixes(draw) -> tuple[MapRule, IPv6Network]:
    """A random rule with a full or shared address (o = p + k), and an End-user prefix under it."""
    offset = draw(st.integers(0, 15))
    k = draw(st.integers(0, 16 - offset - (1 if offset == 0 else 0)))
    p = draw(st.integers(0, min(32, MAX_EA_BITS - k)))
    o = p + k
    n = draw(st.integers(1, 64 - o))
    rule_bits = draw(st.integers(0, (1 << n) - 1)) << (128 - n)
    ipv4_bits = draw(st.integers(0, (1 << (32 - p)) - 1)) << p
    rule = MapRule(IPv6Network((rule_bits, n)), IPv4Network((ipv4_bits, 32 - p)), o, psid_offset=offset)
    ea_bits = draw(st.integers(0, (1 << o) - 1))
    length = draw(st.integers(n + o, 64))  # a longer delegation, its further bits zero
    return rule, IPv6Network((rule_bits | ea_bits << (128 - n - o), length))


@settings(max_examples=300, deadline=None)
@given(rules_and_prefixes(), st.data())
def test_the_br_finds_the_ce_for_any_port_of_its_set(case, data):
    rule, prefix = case
    ce = derive_ce(rule, prefix)
    assert ce.ipv4_address in rule.ipv4_prefix and ce.map_ipv6_address in prefix
    first, last = data.draw(st.sampled_from(ce.port_set.ranges()))
    port = data.draw(st.integers(first, last))
    assert ce_address_for(rule, ce.ipv4_address, port) == ce.map_ipv6_address


@settings(max_examples=300, deadline=None)
@given(rules_and_prefixes(), st.integers(0, 0xFFFF), st.data())
def test_the_ce_a_br_picks_owns_the_address_and_port(case, port, data):
    rule, _ = case
    network = rule.ipv4_prefix
    ipv4 = IPv4Address(data.draw(st.integers(int(network.network_address), int(network.broadcast_address))))
    excluded = port == 0 or rule.psid_offset and port >> (16 - rule.psid_offset) == 0
    if rule.psid_length and excluded:
        with pytest.raises(ValueError, match="in no CE's port set"):
            ce_address_for(rule, ipv4, port)
        return
    address = ce_address_for(rule, ipv4, port)
    ce = derive_ce(rule, IPv6Network((int(address), rule.end_user_prefix_length), strict=False))
    assert (ce.ipv4_address, ce.map_ipv6_address) == (ipv4, address)
    assert rule.psid_length == 0 or port in ce.port_set
