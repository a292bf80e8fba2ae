"""Behaving like other routers, frames in and frames out: RFC 4787 mapping, filtering, port assignment and
hairpinning; RFC 7597 port sets; single passthrough; access rules; profiles."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror
from scapy.layers.ipsec import ESP

from tests.unit.frames import C1, C2, C3, LAN, S1, S2, WAN, WAN_IP, from_lan, from_wan, make_router, step
from router.config import ConfigError
from router.dataplane.events import VpnEvent, event_to_dict
from router.portset import PortSet
from router.packet.ipv4 import IcmpType, Unreachable
from tests.unit.frames import config
from router.config import parse

MAPPINGS = ("endpoint-independent", "address-dependent", "address-and-port-dependent")


def udp_out(r, src=C1, sport=5000, dst=S1, dport=1000, now=1.0):
    return step(r, LAN, from_lan(src, dst, UDP(sport=sport, dport=dport) / b"q"), now)


def outside_port(r, **kw) -> int:
    (pkt,) = udp_out(r, **kw)[WAN]
    return pkt[UDP].sport


def vpn_events(r, kind=None) -> list[dict]:
    out = []
    while (event := r.next_event()) is not None:
        if isinstance(event, VpnEvent) and (kind is None or event.kind == kind):
            out.append(event_to_dict(event))
    return out


def drops(r, reason) -> int:
    return r.counters["drop_" + reason]


# -- RFC 7597 §5.1 port sets --------------------------------------------------------------------------------

def test_port_set_matches_rfc_7597_appendix_b():
    """RFC 7597 Appendix B, example 2: a = 6, k = 8, PSID 0x34: 1232-1235, 2256-2259, ..., 64720-64723."""
    ports = PortSet(offset=6, psid_length=8, psid=0x34)
    ranges = ports.ranges()
    assert ranges[:2] == [(1232, 1235), (2256, 2259)] and ranges[-1] == (64720, 64723)
    assert len(ranges) == 63 and ports.size() == 252


def test_map_e_port_set_has_240_ports_in_15_ranges():
    ports = PortSet(offset=4, psid_length=8, psid=1)
    assert ports.size() == 240 and len(ports.ranges()) == 15
    assert ports.ranges()[0] == (4112, 4127) and all(p >= 4096 for p in ports.ports())


@given(st.integers(0, 12), st.integers(0, 8), st.data())
def test_port_set_membership_is_its_enumeration(offset, psid_length, data):
    psid_length = min(psid_length, 15 - offset)
    psid = data.draw(st.integers(0, (1 << psid_length) - 1))
    ports = PortSet(offset, psid_length, psid)
    listed = set(ports.ports())
    assert listed == {p for p in range(65536) if p in ports} and len(listed) == ports.size()


@pytest.mark.parametrize("bad,message", [
    ({"offset": 16, "psid_length": 0, "psid": 0}, "offset"),
    ({"offset": 4, "psid_length": 13, "psid": 0}, "psid_length"),
    ({"offset": 4, "psid_length": 8, "psid": 256}, "psid"),
    ({"offset": 4, "psid_length": 8}, "psid"),
])
def test_bad_port_sets_are_named(bad, message):
    with pytest.raises(ConfigError, match=f"nat.port_set.{message}"):
        parse(config(nat={"port_set": bad}))


# -- RFC 4787 §4.1 mapping ----------------------------------------------------------------------------------

@pytest.mark.parametrize("mapping,same_address,other_address", [
    ("endpoint-independent", True, True),
    ("address-dependent", True, False),
    ("address-and-port-dependent", False, False),
])
def test_mapping_behaviour(mapping, same_address, other_address):
    """One inside endpoint to S1:1000, S1:2000 and S2:1000: which of these share the first's outside port."""
    r = make_router(nat={"mapping": mapping, "filtering": "endpoint-independent"})
    first = outside_port(r, dst=S1, dport=1000)
    assert (outside_port(r, dst=S1, dport=2000) == first) is same_address
    assert (outside_port(r, dst=S2, dport=1000) == first) is other_address
    assert outside_port(r, dst=S1, dport=1000) == first             # the same flow again: the same session


@pytest.mark.parametrize("mapping", MAPPINGS)
def test_replies_reach_each_mapping(mapping):
    r = make_router(nat={"mapping": mapping})
    ports = [outside_port(r, dst=dst, dport=dport) for dst, dport in ((S1, 1000), (S1, 2000), (S2, 1000))]
    for (dst, dport), port in zip(((S1, 1000), (S1, 2000), (S2, 1000)), ports):
        (back,) = step(r, WAN, from_wan(dst, UDP(sport=dport, dport=port) / b"a"))[LAN]
        assert back[IP].dst == C1 and back[UDP].dport == 5000


@pytest.mark.parametrize("mapping", MAPPINGS)
def test_tcp_and_icmp_follow_the_mapping(mapping):
    r = make_router(nat={"mapping": mapping})
    tcp = [step(r, LAN, from_lan(C1, dst, TCP(sport=6000, dport=80, flags="S")))[WAN][0][TCP].sport
           for dst in (S1, S2)]
    icmp = [step(r, LAN, from_lan(C1, dst, ICMP(id=77)))[WAN][0][ICMP].id for dst in (S1, S2)]
    independent = mapping == "endpoint-independent"
    assert (tcp[0] == tcp[1]) is independent and (icmp[0] == icmp[1]) is independent


def test_port_forward_keeps_its_port_under_dependent_mapping():
    r = make_router(nat={"mapping": "address-and-port-dependent"},
                    forward=[{"proto": "udp", "port": 7000, "to": f"{C1}:7000"}])
    assert outside_port(r, sport=7000, dst=S1) == 7000 and outside_port(r, sport=7000, dst=S2) == 7000


# -- RFC 4787 §5 filtering -----------------------------------------------------------------------------------

@pytest.mark.parametrize("filtering,new_port,new_address", [
    ("endpoint-independent", True, True),
    ("address-dependent", True, False),
    ("address-and-port-dependent", False, False),
])
def test_filtering_behaviour(filtering, new_port, new_address):
    """After C1 sent to S1:1000: does S1 from another port, or S2, get in?"""
    r = make_router(nat={"filtering": filtering})
    port = outside_port(r, dst=S1, dport=1000)
    assert bool(step(r, WAN, from_wan(S1, UDP(sport=1001, dport=port)))[LAN]) is new_port
    assert bool(step(r, WAN, from_wan(S2, UDP(sport=1000, dport=port)))[LAN]) is new_address
    assert step(r, WAN, from_wan(S1, UDP(sport=1000, dport=port)))[LAN]   # the known endpoint always
    assert drops(r, "unsolicited") == (not new_port) + (not new_address)


def test_tcp_syn_from_another_port_under_port_dependent_filtering():
    r = make_router(nat={"filtering": "address-and-port-dependent"})
    port = step(r, LAN, from_lan(C1, S1, TCP(sport=6000, dport=80, flags="S")))[WAN][0][TCP].sport
    assert step(r, WAN, from_wan(S1, TCP(sport=81, dport=port, flags="S")))[LAN] == []


# -- port assignment (RFC 4787 §4.2.1, RFC 6056) -----------------------------------------------------------

def test_preserve_keeps_the_inside_port_when_free():
    r = make_router(nat={"port_assignment": "preserve"})
    assert outside_port(r, src=C1, sport=5000) == 5000
    assert outside_port(r, src=C2, sport=5000) != 5000


def test_sequential_gives_consecutive_ports():
    r = make_router(nat={"port_assignment": "sequential"})
    ports = [outside_port(r, src=C1, sport=40000 + i) for i in range(5)]
    assert [b - a for a, b in zip(ports, ports[1:])] == [1, 1, 1, 1]
    assert ports[0] != 40000


def test_random_draws_and_does_not_preserve():
    r = make_router(nat={"port_assignment": "random"})
    ports = [outside_port(r, src=C1, sport=40000 + i) for i in range(20)]
    assert len(set(ports)) == 20 and sum(p == 40000 + i for i, p in enumerate(ports)) <= 1
    assert sorted(ports) != ports and all(p >= 1024 for p in ports)


# -- hairpinning (RFC 4787 §6) --------------------------------------------------------------------------------

@pytest.mark.parametrize("hairpinning", [True, False])
def test_hairpinning(hairpinning):
    r = make_router(nat={"hairpinning": hairpinning, "filtering": "endpoint-independent"})
    port = outside_port(r, src=C1, sport=5000, dst=S1)
    out = step(r, LAN, from_lan(C2, WAN_IP, UDP(sport=6000, dport=port) / b"hi"))
    if hairpinning:
        (pkt,) = out[LAN]
        assert pkt[IP].dst == C1 and pkt[IP].src == WAN_IP and pkt[UDP].dport == 5000
    else:
        assert out == {LAN: [], WAN: []} and drops(r, "hairpin_off") == 1


# -- port sets in the NAT ------------------------------------------------------------------------------------

MAP_E = {"port_set": {"offset": 4, "psid_length": 8, "psid": 1}}


def test_every_outside_port_lies_in_the_set():
    r = make_router(nat=MAP_E)
    ports = PortSet(4, 8, 1)
    udp = [outside_port(r, src=C1, sport=40000 + i) for i in range(30)]
    tcp = [step(r, LAN, from_lan(C2, S1, TCP(sport=50000 + i, dport=80, flags="S")))[WAN][0][TCP].sport
           for i in range(10)]
    icmp = [step(r, LAN, from_lan(C3, S1, ICMP(id=100 + i)))[WAN][0][ICMP].id for i in range(10)]
    assert all(p in ports for p in udp + tcp + icmp)
    assert outside_port(r, src=C3, sport=4113) == 4113        # preserved: it is in the set


def test_exhausted_set_refuses_with_icmp_3_13():
    r = make_router(nat={"port_set": {"offset": 0, "psid_length": 12, "psid": 0x400}})   # one range of 16 ports
    size = PortSet(0, 12, 0x400).size()
    assert size == 16
    for i in range(size):
        assert udp_out(r, sport=40000 + i)[WAN]
    out = udp_out(r, sport=41000)
    (error,) = out[LAN]
    assert out[WAN] == [] and error[ICMP].type == IcmpType.DEST_UNREACHABLE
    assert error[ICMP].code == Unreachable.ADMIN_PROHIBITED and error[IPerror].src == C1
    assert drops(r, "ports_exhausted") == 1


def test_per_host_limit_still_applies_under_a_set():
    r = make_router(nat=MAP_E, limits={"sessions_per_host": 3})
    for i in range(3):
        assert udp_out(r, sport=40000 + i)[WAN]
    assert not udp_out(r, sport=40010)[WAN] and drops(r, "session_limit") == 1
    assert udp_out(r, src=C2, sport=40010)[WAN]


def test_gre_and_raw_esp_cannot_pass_a_port_set():
    r = make_router(nat=MAP_E)
    assert step(r, LAN, from_lan(C1, S1, ESP(spi=0x1234, seq=1, data=b"x" * 16)))[WAN] == []
    gre = IP(src=C1, dst=S1, proto=47) / (b"\x30\x01\x88\x0b\x00\x00\x00\x01" + b"\x00" * 4)
    assert step(r, LAN, from_lan(C1, S1, gre[IP].payload, proto=47))[WAN] == []
    assert step(r, WAN, from_wan(S1, ESP(spi=0x9999, seq=1, data=b"y" * 16)))[LAN] == []
    assert drops(r, "portless_under_port_set") == 3
    events = []
    while (event := r.next_event()) is not None:
        events.append(event_to_dict(event))
    told = [e for e in events if e["type"] == "packet_dropped" and e["reason"] == "portless_under_port_set"]
    assert told and "no port" in told[0]["summary"]


@pytest.mark.parametrize("sport,dport,vpn", [(500, 500, "ipsec"), (1701, 1701, "l2tp")])
def test_a_preserved_vpn_port_outside_the_set_is_translated_with_an_event(sport, dport, vpn):
    r = make_router(nat=MAP_E)
    (pkt,) = udp_out(r, sport=sport, dport=dport)[WAN]
    assert pkt[UDP].sport in PortSet(4, 8, 1) and pkt[UDP].sport != sport
    (event,) = vpn_events(r, "port_set_translated")
    assert event["vpn"] == vpn and event["port"] == sport and event["outside_port"] == pkt[UDP].sport
    (back,) = step(r, WAN, from_wan(S1, UDP(sport=dport, dport=pkt[UDP].sport) / b"r"))[LAN]
    assert back[IP].dst == C1 and back[UDP].dport == sport


def test_status_reports_the_set():
    r = make_router(nat=MAP_E)
    nat = r.status(1.0)["nat"]
    assert nat["port_set"]["size"] == 240 and nat["port_set"]["ranges"][0] == [4112, 4127]
    assert nat["profile"] == "default" and nat["overrides"] == ["port_set"]


# -- single passthrough -------------------------------------------------------------------------------------

def pptp_syn(r, src, sport=40000, dst=S1, now=1.0):
    return step(r, LAN, from_lan(src, dst, TCP(sport=sport, dport=1723, flags="S")), now)


def l2tp_out(r, src, dst=S1, now=1.0):
    return udp_out(r, src=src, sport=1701, dst=dst, dport=1701, now=now)


def ike_out(r, src, dst=S1, now=1.0):
    return udp_out(r, src=src, sport=500, dst=dst, dport=500, now=now)


OPENERS = {"pptp": pptp_syn, "l2tp": l2tp_out, "ipsec": ike_out}


@pytest.mark.parametrize("vpn", ["pptp", "l2tp", "ipsec"])
def test_single_lets_one_client_through_until_its_sessions_end(vpn):
    r = make_router(passthrough={vpn: "single"})
    opener = OPENERS[vpn]
    assert opener(r, C1)[WAN]
    vpn_events(r)
    assert opener(r, C2)[WAN] == [] and drops(r, "refused_single") == 1
    (event,) = vpn_events(r, "refused_single")
    assert event["vpn"] == vpn and event["client"] == C2 and event["holder"] == C1 and event["server"] == S1
    assert r.status(1.0)["passthrough_holder"][vpn] == C1
    assert opener(r, C1, dst=S2)[WAN]                      # the holder may open more
    for session in r.nat.sessions():                       # the holder hangs up: its sessions end
        if session.helper is not None:
            r.close_session(session.id, 2.0)
    assert r.status(2.0)["passthrough_holder"][vpn] is None
    assert opener(r, C2, now=3.0)[WAN]                     # now the next client gets through
    assert r.status(3.0)["passthrough_holder"][vpn] == C2


def test_single_hands_over_when_the_holders_control_connection_closes():
    """Both FINs (or a RST) end a PPTP control connection: its session waits out its timeout, but holds no more."""
    r = make_router(passthrough={"pptp": "single"})
    (syn,) = pptp_syn(r, C1)[WAN]
    port = syn[TCP].sport
    step(r, WAN, from_wan(S1, TCP(sport=1723, dport=port, flags="SA", seq=100, ack=syn[TCP].seq + 1)))
    step(r, LAN, from_lan(C1, S1, TCP(sport=40000, dport=1723, flags="A", seq=syn[TCP].seq + 1, ack=101)))
    assert pptp_syn(r, C2, sport=40001)[WAN] == []
    step(r, LAN, from_lan(C1, S1, TCP(sport=40000, dport=1723, flags="FA", seq=syn[TCP].seq + 1, ack=101)))
    assert pptp_syn(r, C2, sport=40002)[WAN] == []            # half closed: still held
    step(r, WAN, from_wan(S1, TCP(sport=1723, dport=port, flags="FA", seq=101, ack=syn[TCP].seq + 2)))
    assert pptp_syn(r, C2, sport=40003)[WAN]
    assert r.status(1.0)["passthrough_holder"]["pptp"] == C2


def test_single_refuses_raw_esp_from_another_client():
    r = make_router(passthrough={"ipsec": "single"})
    assert ike_out(r, C1)[WAN]
    assert step(r, LAN, from_lan(C2, S2, ESP(spi=0x2222, seq=1, data=b"z" * 16)))[WAN] == []
    assert drops(r, "refused_single") == 1
    assert step(r, LAN, from_lan(C1, S2, ESP(spi=0x1111, seq=1, data=b"z" * 16)))[WAN]


def test_single_leaves_other_protocols_alone():
    r = make_router(passthrough={"pptp": "single"})
    assert pptp_syn(r, C1)[WAN] and l2tp_out(r, C2)[WAN] and ike_out(r, C3)[WAN]
    assert outside_port(r, src=C2, sport=7000)                   # plain traffic is no VPN


def test_switch_modes_at_run_time_and_on_restores_the_mode():
    r = make_router()
    r.set_passthrough("pptp", "single", 1.0)
    r.set_passthrough("pptp", "off", 1.0)
    assert r.status(1.0)["passthrough"]["pptp"] is False and r.status(1.0)["passthrough_mode"]["pptp"] == "off"
    r.set_passthrough("pptp", "on", 1.0)
    assert r.status(1.0)["passthrough_mode"]["pptp"] == "single" and r.status(1.0)["passthrough"]["pptp"] is True
    r.set_passthrough("pptp", True, 1.0)
    assert r.status(1.0)["passthrough_mode"]["pptp"] == "single"
    with pytest.raises(ValueError):
        r.set_passthrough("pptp", "sometimes", 1.0)
    modes = []
    while (event := r.next_event()) is not None:
        data = event_to_dict(event)
        if data["type"] == "switch_changed":
            modes.append((data["on"], data["mode"]))
    assert modes == [(True, "single"), (False, "off"), (True, "single")]


# -- access rules ---------------------------------------------------------------------------------------------

RULES = [
    {"vpn": "pptp", "client": C1, "server": S1, "action": "allow"},
    {"vpn": "any", "client": "192.168.77.0/24", "server": S1, "action": "deny"},
]


def test_first_matching_rule_wins_and_names_itself():
    r = make_router(passthrough={"rule": RULES})
    assert pptp_syn(r, C1)[WAN]                             # rule 1
    assert pptp_syn(r, C2)[WAN] == []                       # rule 2
    assert l2tp_out(r, C1)[WAN] == []                       # rule 2: rule 1 is PPTP only
    assert ike_out(r, C2, dst=S2)[WAN]                      # no rule: the default, allow
    denied = vpn_events(r, "denied")
    assert [(e["vpn"], e["client"], e["rule"]) for e in denied] == [("pptp", C2, 2), ("l2tp", C1, 2)]
    assert drops(r, "denied_by_rule") == 2
    assert [rule["hits"] for rule in r.admission.view()["rules"]] == [1, 2]


def test_default_deny_and_rules_at_run_time():
    r = make_router(passthrough={"default_action": "deny"})
    assert ike_out(r, C1)[WAN] == []
    assert vpn_events(r, "denied")[0]["rule"] is None
    view = r.add_rule({"vpn": "ipsec", "client": C1, "server": "198.51.100.0/24", "action": "allow"}, None, 1.0)
    assert view["rules"][0]["index"] == 1 and view["rules"][0]["client"] == f"{C1}/32"
    assert ike_out(r, C1, now=2.0)[WAN]
    assert pptp_syn(r, C1)[WAN] == []                       # still denied: the rule is for IPsec
    r.delete_rule(1, 3.0)
    assert ike_out(r, C1, dst=S2, now=3.0)[WAN] == []
    with pytest.raises(LookupError):
        r.delete_rule(1, 3.0)
    with pytest.raises(ValueError, match="rule.action"):
        r.add_rule({"vpn": "ipsec", "action": "maybe"}, None, 3.0)
    with pytest.raises(ValueError, match="rule.client"):
        r.add_rule({"client": "192.168.77.5/24", "action": "deny"}, None, 3.0)


def test_rules_apply_to_raw_esp():
    r = make_router(passthrough={"rule": [{"vpn": "ipsec", "client": C2, "action": "deny"}]})
    assert step(r, LAN, from_lan(C2, S1, ESP(spi=0x42, seq=1, data=b"e" * 16)))[WAN] == []
    assert step(r, LAN, from_lan(C1, S1, ESP(spi=0x43, seq=1, data=b"e" * 16)))[WAN]
    assert vpn_events(r, "denied")[0]["client"] == C2


def test_refusals_are_rate_limited_and_counted():
    r = make_router(passthrough={"default_action": "deny"})
    for i in range(50):
        pptp_syn(r, C1, sport=40000 + i)
    assert drops(r, "denied_by_rule") == 50 and 0 < len(vpn_events(r, "denied")) < 50


@pytest.mark.parametrize("bad,where", [
    ({"rule": [{"vpn": "wireguard", "action": "deny"}]}, "passthrough.rule[0].vpn"),
    ({"rule": [{"action": "deny", "port": 1}]}, "passthrough.rule[0].port"),
    ({"rule": {"action": "deny"}}, "passthrough.rule"),
    ({"default_action": "maybe"}, "passthrough.default_action"),
    ({"pptp": "double"}, "passthrough.pptp"),
])
def test_bad_passthrough_config_is_named(bad, where):
    with pytest.raises(ConfigError, match=where.replace("[", r"\[").replace("]", r"\]")):
        parse(config(passthrough=bad))


# -- profiles ---------------------------------------------------------------------------------------------------

def test_profile_presets_and_explicit_keys_over_them():
    cfg = parse(config(nat={"profile": "strict", "hairpinning": True}, passthrough={"ipsec": "multi"}))
    assert cfg.nat.mapping == "address-and-port-dependent" and cfg.nat.hairpinning is True
    assert cfg.nat.overrides == ("hairpinning",)
    assert cfg.passthrough == {"pptp": "off", "l2tp": "off", "ipsec": "multi"}
    assert parse(config(nat={"profile": "basic-home"})).passthrough["pptp"] == "single"
    assert parse(config(nat={"profile": "map-e"})).nat.port_set.size() == 240
    with pytest.raises(ConfigError, match="nat.profile"):
        parse(config(nat={"profile": "tplink"}))
    with pytest.raises(ConfigError, match="nat.mapping"):
        parse(config(nat={"mapping": "cone"}))


def test_a_profile_at_run_time_applies_to_new_sessions_only():
    r = make_router()
    old = outside_port(r, dst=S1)                                  # address-dependent filtering
    nat = r.set_profile("strict", 2.0)
    assert nat["profile"] == "strict" and r.status(2.0)["passthrough_mode"]["pptp"] == "off"
    assert step(r, WAN, from_wan(S1, UDP(sport=1001, dport=old)), 2.0)[LAN]   # the old mapping keeps its filter
    new = outside_port(r, src=C2, sport=6000, dst=S1, now=2.0)
    assert step(r, WAN, from_wan(S1, UDP(sport=1001, dport=new)), 2.0)[LAN] == []
    assert outside_port(r, src=C2, sport=6000, dst=S2, now=2.0) != new         # address-and-port-dependent now
    kinds = []
    while (event := r.next_event()) is not None:
        kinds.append(event_to_dict(event)["type"])
    assert "profile_changed" in kinds
    with pytest.raises(LookupError):
        r.set_profile("tplink", 3.0)
