"""IPsec passthrough: IKE demultiplexed by SPIs on a shared port 500, NAT-T, raw ESP pairing, fragments, the switch.

Frames in, frames out: every emitted frame has its checksums recomputed by
scapy (``frames.step``), the IKE messages are built and read back by scapy,
and ESP is really encrypted, so "delivered" means the receiving end's SA
decrypted and authenticated it.  Assertions go through the public surface
only: emitted frames, ``session_infos(now)``, events and counters.  The
behaviour checked is the one in notes/ipsec_contract.md.
"""

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from scapy.contrib.ikev2 import IKEv2
from scapy.layers.inet import IP, UDP
from scapy.layers.ipsec import ESP, NAT_KEEPALIVE, NON_ESP
from scapy.layers.isakmp import ISAKMP
from scapy.layers.l2 import GRE_PPTP
from scapy.packet import Raw

from tests.unit.frames import C1, C2, C3, FAR, LAN, S1, S2, WAN, WAN_IP, from_lan, from_wan, make_router, step
from tests.unit.ipsec_frames import (CAPTURE_CLIENT, IKE_PORT, IKEV1_EXCHANGES, IKEV2_EXCHANGES, KEEPALIVE, MARKER,
                                     NATT_PORT, NO_SPI, ChildSa, EspSa, IkeClient, capture, conversation, esp_bytes,
                                     esp_in, esp_out, fragments, ike, ike_spis, ikev2, natt, parse_ike, payload,
                                     reassemble, spi, tick, udp_in, udp_out, unmark)
from tests.unit.pptp_frames import Control, call_up
from router.dataplane.events import event_to_dict

CLIENTS = (C1, C2, C3)
MODES = {"preserve": {}, "translate": {"ipsec": {"ike_port": "translate"}}}
# Exchange type numbers from the RFCs (RFC 2408 §3.1, RFC 7296 §3.1), independent of scapy's tables.
EXCHANGE_NUMBERS = {"identity protection": 2, "aggressive": 4, "informational": 5, "quick mode": 32,
                    "IKE_SA_INIT": 34, "IKE_AUTH": 35, "CREATE_CHILD_SA": 36, "INFORMATIONAL": 37}


def associations(r, now: float = 5.0) -> list[dict]:
    """The IPsec associations as ``ctl sessions --json`` shows them."""
    return [i.to_dict() for i in r.session_infos(now) if i.vpn == "ipsec" and i.proto == "esp"]


def association(r, client: str, gateway: str = S1, now: float = 5.0) -> dict:
    (found,) = [a for a in associations(r, now) if a["client"] == client and a["gateway"] == gateway]
    return found


def udp_sessions(r, now: float = 5.0) -> list[dict]:
    """The UDP NAT sessions (500/4500) that carry IKE and NAT-T."""
    return [i.to_dict() for i in r.session_infos(now) if i.vpn == "ipsec" and i.proto == "udp"]


def events(r) -> list[dict]:
    """The IPsec events since the last call, in their wire form ({"type": "vpn", "vpn": "ipsec", "event": ...})."""
    out = []
    for e in iter(r.next_event, None):
        wire = event_to_dict(e)
        if wire.get("type") == "vpn" and wire.get("vpn") == "ipsec":
            out.append(wire)
    return out


def of_kind(evs: list[dict], kind: str) -> list[dict]:
    return [e for e in evs if e["event"] == kind]


def as_list(value) -> list:
    """A session field that is a string for one value and a list for several, as a sorted list."""
    return sorted([value] if isinstance(value, str) else value or [])


def ike_pair(r, client: str, n: int, gateway: str = S1, version: int = 2, now: float = 1.0) -> IkeClient:
    """``client`` opens IKE SA number ``n`` with ``gateway`` (SPIs spi(n), spi(100 + n)); both messages cross."""
    c = IkeClient(r, client, gateway, version, spi_i=spi(n))
    assert c.send(now=now) and c.answer(spi(100 + n), now=now)
    return c


# -- the builders, checked against scapy and against what strongSwan sent ---------------------------------------------

@pytest.mark.parametrize("version, exchange", [(2, x) for x in IKEV2_EXCHANGES] + [(1, x) for x in IKEV1_EXCHANGES])
@pytest.mark.parametrize("responder_spi", [False, True])
def test_ike_builders_read_back_by_scapy(version, exchange, responder_spi):
    spi_r = spi(2) if responder_spi else NO_SPI
    msg = ike(version, spi(1), spi_r, exchange=exchange, msg_id=3)
    parsed = parse_ike(msg)
    assert type(parsed) is (IKEv2 if version == 2 else ISAKMP)
    assert ike_spis(msg) == (spi(1), spi_r)
    assert parsed.version >> 4 == version and parsed.exch_type == EXCHANGE_NUMBERS[exchange]
    assert parsed.id == 3 and parsed.length == len(msg) > 28
    assert unmark(natt(msg)) == msg and natt(msg)[:4] == bytes(4)


def test_natt_framing_and_esp_read_back_by_scapy():
    """scapy's own dissector of UDP 4500 (RFC 3948 §2) tells our three kinds apart."""
    def on_4500(data):
        return UDP(bytes(UDP(sport=NATT_PORT, dport=NATT_PORT) / Raw(data)))
    assert NON_ESP in on_4500(natt(ikev2(spi(1)))) and on_4500(natt(ikev2(spi(1))))[IKEv2].init_SPI == spi(1)
    assert NAT_KEEPALIVE in on_4500(KEEPALIVE) and KEEPALIVE == b"\xff" and MARKER == bytes(4)
    sa = EspSa(0xC0DE0001, C1, S1, nat_t=True)
    sealed = sa.seal(b"payload")
    assert on_4500(sealed)[ESP].spi == 0xC0DE0001 and on_4500(sealed)[ESP].seq == 1
    assert sa.open(sealed) == b"payload"
    tampered = bytearray(sealed)
    tampered[-1] ^= 1
    with pytest.raises(Exception):        # the ICV really is checked: "delivered" means authenticated
        sa.open(bytes(tampered))


def test_builders_make_the_headers_strongswan_sent():
    """Each captured IKE header, rebuilt from its fields, is the captured one (length and first payload type aside)."""
    seen = 0
    for name in ("natt_2cli.pcap", "ike_natt_1cli.pcap"):
        for mine, sport, dport, data in conversation(capture(name)):
            if NATT_PORT in (sport, dport) and data[:4] == MARKER:
                assert natt(data[4:]) == data
                data = data[4:]
            elif IKE_PORT not in (sport, dport):
                continue
            msg = parse_ike(data)
            exchange = {v: k for k, v in EXCHANGE_NUMBERS.items()}[msg.exch_type]
            rebuilt = ikev2(msg.init_SPI, msg.resp_SPI, exchange=exchange, response=bool(msg.flags & 0x20),
                            msg_id=msg.id)
            skip_next_payload = slice(17, 24)           # our bodies differ from strongSwan's; the header must not
            assert rebuilt[:16] == data[:16] and rebuilt[skip_next_payload] == data[skip_next_payload]
            assert msg.length == len(data)
            assert bool(msg.flags & 0x08) == mine            # strongSwan's clients initiated every IKE SA
            seen += 1
    assert seen == 10
    natt_packets = conversation(capture("natt_2cli.pcap"))
    assert [d for _, _, _, d in natt_packets if len(d) == 1] == [KEEPALIVE, KEEPALIVE]
    esp = [ESP(d) for _, s, t, d in natt_packets if NATT_PORT in (s, t) and len(d) > 8 and d[:4] != MARKER]
    assert {f"{e.spi:08x}" for e in esp} == {"8ba3e264", "81c1aa92", "1e6b342e", "f0612681"}
    raw = [p for p in capture("esp_masq_2cli.pcap") if p[IP].proto == 50]
    assert [f"{ESP(bytes(p[IP].payload)).spi:08x}" for p in raw] == ["11111111"] * 5 + ["aaaa0001"] * 3 + \
        ["aaaa0002"] * 3


def test_the_contract_counters_exist_at_zero():
    r = make_router()
    for name in ("ipsec_malformed", "ipsec_natt_keepalives", "ipsec_ike_ambiguous", "ipsec_esp_ambiguous",
                 "ipsec_esp_learned", "drop_esp_no_association", "drop_esp_malformed", "drop_passthrough_off"):
        assert r.counters[name] == 0, name


# -- IKE: three clients, one gateway --------------------------------------------------------------------------------

@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("mode", ["preserve", "translate"])
def test_ike_from_three_clients_to_one_gateway(version, mode):
    r = make_router(**MODES[mode])
    clients = [IkeClient(r, c, S1, version, spi_i=spi(i)) for i, c in enumerate(CLIENTS)]
    for i, c in enumerate(clients):                      # all three ask first
        (pkt,) = c.send(now=1.0 + i)
        assert (pkt[IP].src, pkt[IP].dst, pkt[UDP].dport) == (WAN_IP, S1, IKE_PORT)
        assert payload(pkt) == c.sent                    # IKE crosses byte for byte
    ports = [c.outside_port for c in clients]
    if mode == "preserve":
        assert ports == [IKE_PORT] * 3
    else:
        assert ports[0] == IKE_PORT and len(set(ports)) == 3
    for i, c in reversed(list(enumerate(clients))):      # the gateway answers in reverse order
        (got,) = c.answer(spi(10 + i), now=5.0)
        assert (got[IP].src, got[IP].dst, got[UDP].sport, got[UDP].dport) == (S1, c.client, IKE_PORT, IKE_PORT)
        assert payload(got) == c.answered and ike_spis(payload(got)) == (spi(i), spi(10 + i))
    for c in (clients[1], clients[2], clients[0]):       # the next exchange, interleaved: both SPIs known now
        (pkt,) = c.send(now=6.0)
        assert payload(pkt) == c.sent and pkt[UDP].sport == c.outside_port
    for c in (clients[2], clients[0], clients[1]):
        (got,) = c.answer(now=7.0)
        assert got[IP].dst == c.client and got[UDP].dport == IKE_PORT and payload(got) == c.answered
    assert r.counters["ipsec_ike_ambiguous"] == r.counters["ipsec_malformed"] == 0
    ups = of_kind(events(r), "ike_up")
    assert sorted((e["client"], e["gateway"], e["ike_spi_i"], e["ike_spi_r"], e["natt"]) for e in ups) == \
        sorted((c.client, S1, spi(i).hex(), spi(10 + i).hex(), False) for i, c in enumerate(clients))
    for i, c in enumerate(clients):
        a = association(r, c.client, now=8.0)
        assert (a["proto"], a["vpn"], a["inside"], a["outside"], a["remote"]) == ("esp", "ipsec", c.client, WAN_IP, S1)
        assert a["state"] == "negotiating" and a["natt"] is False and a["ambiguous"] is False
        assert (a["ike_spi_i"], a["ike_spi_r"]) == (spi(i).hex(), spi(10 + i).hex())
        assert a["esp_spi_out"] is None and a["esp_spi_in"] is None
        assert a["ports"] == [{"inside": IKE_PORT, "outside": c.outside_port, "remote": IKE_PORT}]
        assert (a["packets_out"], a["packets_in"]) == (2, 2)
        (s,) = [s for s in udp_sessions(r, 8.0) if s["inside"] == f"{c.client}:{IKE_PORT}"]
        assert s["association"] == a["id"] and s["outside"] == f"{WAN_IP}:{c.outside_port}"
        assert (s["ike_spi_i"], s["ike_spi_r"], s["natt"]) == (spi(i).hex(), spi(10 + i).hex(), False)
    json.dumps([i.to_dict() for i in r.session_infos(8.0)])


@pytest.mark.parametrize("latest", CLIENTS)
def test_a_gateway_initiated_ike_sa_goes_to_the_client_that_sent_ike_most_recently(latest):
    r = make_router()
    clients = {c: ike_pair(r, c, i, now=1.0 + i) for i, c in enumerate(CLIENTS)}
    clients[latest].send(now=10.0)                       # its IKE_AUTH: now the most recent
    events(r)
    new = ikev2(spi(77), exchange="IKE_SA_INIT")          # SPIs nobody announced: the gateway starts an IKE SA
    (got,) = udp_in(r, S1, new, IKE_PORT, now=11.0)
    assert (got[IP].dst, got[UDP].dport, payload(got)) == (latest, IKE_PORT, new)
    (report,) = of_kind(events(r), "ike_ambiguous")
    assert report["gateway"] == S1 and report["ike_spi_i"] == spi(77).hex() and report["ike_spi_r"] == "0" * 16
    assert sorted(report["candidates"]) == sorted(CLIENTS) and report["chosen"] == latest
    assert r.counters["ipsec_ike_ambiguous"] == 1
    # the chosen client answers; from then on the new SA's SPIs name it, no more guessing
    reply = ikev2(spi(77), spi(78), exchange="IKE_SA_INIT", response=True)
    (sent,) = udp_out(r, latest, S1, reply, now=12.0)
    assert payload(sent) == reply
    for n in range(3):
        auth = ikev2(spi(77), spi(78), exchange="IKE_AUTH", msg_id=1 + n)
        (got,) = udp_in(r, S1, auth, IKE_PORT, now=13.0 + n)
        assert got[IP].dst == latest
    assert r.counters["ipsec_ike_ambiguous"] == 1
    assert not of_kind(events(r), "ike_ambiguous")


@pytest.mark.parametrize("others", [(), ((C2, S2),), ((C2, S2), (C3, S2))])
def test_a_gateway_with_one_client_needs_no_demultiplexing(others):
    r = make_router()
    ike_pair(r, C1, 1)
    for i, (client, gateway) in enumerate(others):     # other clients talk to another gateway
        ike_pair(r, client, 10 + i, gateway=gateway)
    events(r)
    new = ikev2(spi(77))
    (got,) = udp_in(r, S1, new, IKE_PORT, now=2.0)
    assert got[IP].dst == C1 and payload(got) == new
    assert r.counters["ipsec_ike_ambiguous"] == 0 and not of_kind(events(r), "ike_ambiguous")


@pytest.mark.parametrize("filtering", ["address-dependent", "endpoint-independent"])
@pytest.mark.parametrize("mode", ["preserve", "translate"])
@pytest.mark.parametrize("port", [IKE_PORT, NATT_PORT])
def test_ike_and_natt_from_an_address_the_client_does_not_talk_to_are_refused(filtering, mode, port):
    r = make_router(nat={"filtering": filtering}, **MODES[mode])
    c = IkeClient(r, C1, S1, spi_i=spi(1), port=port, remote_port=port)
    c.send()
    for stranger in (S2, FAR):
        assert udp_in(r, stranger, c.frame(ikev2(spi(1), spi(2), response=True)), c.outside_port, port) == []
        assert udp_in(r, stranger, c.frame(ikev2(spi(9))), c.outside_port, port) == []
    (got,) = c.answer(spi(2))                            # the gateway the client talks to still gets through
    assert got[IP].dst == C1


# -- NAT-T (UDP 4500, RFC 3948) ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["preserve", "translate"])
def test_natt_marker_ike_esp_in_udp_and_keepalives(mode):
    r = make_router(**MODES[mode])
    natts, children = [], []
    for i, client in enumerate((C1, C2)):
        c = ike_pair(r, client, i, now=1.0).float_to_natt()
        (pkt,) = c.send(now=2.0)                         # IKE_AUTH behind the non-ESP marker
        assert (pkt[IP].src, pkt[UDP].dport) == (WAN_IP, NATT_PORT) and NON_ESP in pkt
        assert payload(pkt) == c.sent and unmark(payload(pkt))[:8] == spi(i)
        (got,) = c.answer(now=2.5)
        assert (got[IP].dst, got[UDP].sport, got[UDP].dport) == (client, NATT_PORT, NATT_PORT)
        assert payload(got) == c.answered and NON_ESP in got
        natts.append(c)
    assert len({c.outside_port for c in natts}) == 2     # the clients are told apart by their NAT-T ports
    assert r.counters["ipsec_malformed"] == 0
    events(r)
    for i, c in enumerate(natts):
        child = ChildSa(r, c.client, S1, 0xC0000001 + i, 0xD0000001 + i, natt_port=c.outside_port)
        (pkt,) = child.out(b"to the gateway", now=3.0)
        assert ESP in pkt and pkt[ESP].spi == 0xC0000001 + i
        assert child.delivered_out([pkt]) == b"to the gateway"
        assert child.delivered_in(child.into(b"to the client", now=3.5)) == b"to the client"
        children.append(child)
    assert r.counters["ipsec_natt_keepalives"] == 0
    for c in natts:
        (ka,) = udp_out(r, c.client, S1, KEEPALIVE, NATT_PORT, NATT_PORT, now=4.0)
        assert payload(ka) == b"\xff" and ka[UDP].sport == c.outside_port and NAT_KEEPALIVE in ka
    assert r.counters["ipsec_natt_keepalives"] == 2
    learned = of_kind(events(r), "esp_learned")
    assert sorted((e["client"], e["spi"], e["direction"], e["natt"]) for e in learned) == sorted(
        [(C1, "c0000001", "out", True), (C1, "d0000001", "in", True),
         (C2, "c0000002", "out", True), (C2, "d0000002", "in", True)])
    for i, c in enumerate(natts):
        a = association(r, c.client)
        assert a["natt"] is True and a["state"] == "established"
        assert (a["esp_spi_out"], a["esp_spi_in"]) == (f"{0xC0000001 + i:08x}", f"{0xD0000001 + i:08x}")
        assert (a["ike_spi_i"], a["ike_spi_r"]) == (spi(i).hex(), spi(100 + i).hex())
        assert {"inside": NATT_PORT, "outside": c.outside_port, "remote": NATT_PORT} in a["ports"]
        assert len(a["ports"]) == 2
        assert (a["packets_out"], a["packets_in"]) == (4, 3)     # IKE x2, ESP, keepalive out; IKE x2, ESP in
        (s,) = [s for s in udp_sessions(r) if s["inside"] == f"{c.client}:{NATT_PORT}"]
        assert s["natt"] is True and s["association"] == a["id"] and s["ike_spi_i"] == spi(i).hex()


def test_natt_sessions_live_timeouts_natt_and_ike_sessions_timeouts_udp():
    r = make_router(timeouts={"udp": 300, "natt": 600})
    c = ike_pair(r, C1, 1, now=0.0).float_to_natt()
    c.send(now=0.0)
    c.answer(now=0.0)
    child = ChildSa(r, C1, S1, 0xC0000001, 0xD0000001, natt_port=c.outside_port).up(now=0.0)
    tick(r, 450.0)                                       # past udp's 300 s, before natt's 600 s
    ports = [s["inside"] for s in udp_sessions(r, 450.0)]
    assert ports == [f"{C1}:{NATT_PORT}"]                # the IKE session on 500 went, the NAT-T one lives
    assert association(r, C1, now=450.0)["natt"] is True
    assert child.delivered_in(child.into(now=450.0)) == b"down"
    events(r)
    tick(r, 450.0 + 601.0)
    assert udp_sessions(r, 1051.0) == [] and associations(r, 1051.0) == []
    assert child.into(now=1052.0) == []
    downs = of_kind(events(r), "ike_down")
    assert [(e["client"], e["gateway"], e["ike_spi_i"], e["ike_spi_r"]) for e in downs] == \
        [(C1, S1, spi(1).hex(), spi(101).hex())]
    assert downs[0]["reason"]


# -- raw ESP (IP protocol 50, RFC 4303) --------------------------------------------------------------------------------

def test_raw_esp_from_three_clients_one_after_another():
    r = make_router()
    children = [ChildSa(r, c, S1, 0x1000 + i, 0x2000 + i) for i, c in enumerate(CLIENTS)]
    for i, child in enumerate(children):
        assert child.delivered_out(child.out(b"up%d" % i, now=1.0 + i)) == b"up%d" % i
        assert child.delivered_in(child.into(b"down%d" % i, now=1.5 + i)) == b"down%d" % i
    assert r.counters["ipsec_esp_ambiguous"] == 0 and r.counters["ipsec_esp_learned"] == 6
    learned = of_kind(events(r), "esp_learned")
    assert [(e["client"], e["gateway"], e["spi"], e["direction"], e["natt"]) for e in learned] == [
        (c, S1, f"{spi_:08x}", d, False) for i, c in enumerate(CLIENTS)
        for spi_, d in ((0x1000 + i, "out"), (0x2000 + i, "in"))]
    for i, c in enumerate(CLIENTS):
        a = association(r, c)
        assert (a["proto"], a["vpn"], a["inside"], a["outside"], a["remote"]) == ("esp", "ipsec", c, WAN_IP, S1)
        assert (a["esp_spi_out"], a["esp_spi_in"]) == (f"{0x1000 + i:08x}", f"{0x2000 + i:08x}")
        assert a["state"] == "established" and a["ambiguous"] is False and a["natt"] is False
        assert a["ike_spi_i"] is None and a["ports"] == []
        assert (a["packets_out"], a["packets_in"]) == (1, 1) and a["bytes_out"] > 0 and a["bytes_in"] > 0
        assert [e["id"] for e in learned if e["client"] == c] == [a["id"]] * 2


def test_raw_esp_interleaved_once_learned():
    r = make_router()
    children = [ChildSa(r, c, S1, 0x1000 + i, 0x2000 + i).up(now=1.0 + i) for i, c in enumerate(CLIENTS)]
    plan = [(child, way) for child in children for way in ("out", "in") for _ in range(5)]
    random.Random(7).shuffle(plan)
    for n, (child, way) in enumerate(plan):
        data = b"%s %d" % (way.encode(), n)
        if way == "out":
            assert child.delivered_out(child.out(data, now=10.0 + n)) == data
        else:
            assert child.delivered_in(child.into(data, now=10.0 + n)) == data
    for c in CLIENTS:
        a = association(r, c, now=50.0)
        assert (a["packets_out"], a["packets_in"]) == (6, 6)
    assert r.counters["ipsec_esp_ambiguous"] == 0 and r.counters["ipsec_esp_learned"] == 6


@pytest.mark.parametrize("answered_first", [C1, C2])
def test_an_unknown_inbound_spi_with_several_clients_awaiting_goes_to_the_latest_sender(answered_first):
    """Both clients sent first; the gateway's first new SPI goes to C2, whose ESP was seen last, marked ambiguous."""
    r = make_router()
    a, b = ChildSa(r, C1, S1, 0x1001, 0x2001), ChildSa(r, C2, S1, 0x1002, 0x2002)
    a.delivered_out(a.out(now=1.0))
    b.delivered_out(b.out(now=2.0))
    events(r)
    first, second = (a, b) if answered_first == C1 else (b, a)
    (got,) = first.into(now=3.0)
    assert got[IP].dst == C2                             # the rule's choice, even where it misdelivers (RFC 3715 §2.1)
    (report,) = of_kind(events(r), "esp_ambiguous")
    assert report["gateway"] == S1 and report["spi"] == f"{first.to_client.spi:08x}"
    assert sorted(report["candidates"]) == [C1, C2] and report["chosen"] == C2
    assert r.counters["ipsec_esp_ambiguous"] == 1
    assert association(r, C2)["ambiguous"] is True and association(r, C1)["ambiguous"] is False
    # the next new SPI: only C1 still awaits one, so no guess is needed
    (got,) = second.into(now=4.0)
    assert got[IP].dst == C1
    assert r.counters["ipsec_esp_ambiguous"] == 1 and not of_kind(events(r), "esp_ambiguous")
    assert association(r, C1)["ambiguous"] is False


def test_when_no_client_awaits_every_client_of_the_gateway_is_a_candidate():
    r = make_router()
    a = ChildSa(r, C1, S1, 0x1001, 0x2001).up(now=1.0)
    b = ChildSa(r, C2, S1, 0x1002, 0x2002).up(now=2.0)
    a.delivered_out(a.out(now=3.0))                      # C1 sent last; nobody awaits an inbound SPI
    events(r)
    extra = EspSa(0x2FFF, S1, C1)
    (got,) = esp_in(r, S1, extra.seal(b"x"), now=4.0)
    assert got[IP].dst == C1 and extra.open(esp_bytes(got)) == b"x"
    (report,) = of_kind(events(r), "esp_ambiguous")
    assert sorted(report["candidates"]) == [C1, C2] and report["chosen"] == C1
    assert b.delivered_in(b.into(now=5.0)) == b"down"     # learned SPIs are not disturbed


def test_inbound_esp_before_any_outbound_goes_to_the_client_that_negotiated_with_the_gateway():
    """An IKE-only (negotiating) association is an association with the gateway: one candidate, learned."""
    r = make_router()
    ike_pair(r, C1, 1)
    events(r)
    child = ChildSa(r, C1, S1, 0x1001, 0x2001)
    got = child.into(now=2.0)
    assert got, f"dropped; drop_esp_no_association = {r.counters['drop_esp_no_association']}"
    assert child.delivered_in(got) == b"down"
    assert [(e["client"], e["spi"], e["direction"]) for e in of_kind(events(r), "esp_learned")] == \
        [(C1, "00002001", "in")]
    assert association(r, C1)["state"] == "half_open"


def test_rekeyed_spis_are_followed_and_the_old_ones_expire():
    r = make_router(timeouts={"esp": 100})
    old = [ChildSa(r, c, S1, 0x1000 + i, 0x2000 + i).up(now=1.0 + i) for i, c in enumerate((C1, C2))]
    new = ChildSa(r, C1, S1, 0x3000, 0x4000)             # C1 rekeys: a new pair from the same client and gateway
    assert new.delivered_out(new.out(now=10.0)) == b"up"
    assert new.delivered_in(new.into(now=11.0)) == b"down"   # only C1 awaits: no guess although C2 is there
    assert r.counters["ipsec_esp_ambiguous"] == 0
    a = association(r, C1, now=12.0)
    assert as_list(a["esp_spi_out"]) == ["00001000", "00003000"]
    assert as_list(a["esp_spi_in"]) == ["00002000", "00004000"]
    assert old[0].delivered_in(old[0].into(now=20.0)) == b"down"   # the old SA still works until it idles out
    assert old[0].delivered_out(old[0].out(now=20.0)) == b"up"
    for t in (60.0, 110.0):
        tick(r, t)
        new.up(now=t)
        old[1].up(now=t)
    events(r)
    tick(r, 121.0)                                       # C1's old SPIs were last seen at 20
    downs = of_kind(events(r), "esp_down")
    assert sorted((e["client"], e["gateway"], e["spi"], e["direction"]) for e in downs) == \
        [(C1, S1, "00001000", "out"), (C1, S1, "00002000", "in")]
    assert all(e["reason"] and e["id"] == a["id"] for e in downs)
    a = association(r, C1, now=121.0)
    assert (a["esp_spi_out"], a["esp_spi_in"], a["state"]) == ("00003000", "00004000", "established")
    assert new.delivered_in(new.into(now=122.0)) == b"down"
    tick(r, 300.0)
    assert associations(r, 300.0) == []
    assert sorted(e["spi"] for e in of_kind(events(r), "esp_down")) == \
        ["00001001", "00002001", "00003000", "00004000"]


def test_an_association_ends_when_its_last_session_and_spi_are_gone():
    r = make_router(timeouts={"udp": 300, "esp": 600})
    ike_pair(r, C1, 1, now=0.0)
    tick(r, 100.0)
    ChildSa(r, C1, S1, 0x1001, 0x2001).up(now=100.0)
    events(r)
    tick(r, 450.0)                                       # the IKE session is gone; the SPIs live on
    assert udp_sessions(r, 450.0) == []
    a = association(r, C1, now=450.0)
    assert a["state"] == "established" and a["ike_spi_i"] == spi(1).hex()
    assert not of_kind(events(r), "ike_down")
    tick(r, 701.0)
    assert associations(r, 701.0) == []
    evs = events(r)
    assert len(of_kind(evs, "esp_down")) == 2
    (down,) = of_kind(evs, "ike_down")
    assert (down["id"], down["client"], down["gateway"], down["ike_spi_i"], down["ike_spi_r"]) == \
        (a["id"], C1, S1, spi(1).hex(), spi(101).hex())


@pytest.mark.parametrize("spoofer", [S2, FAR])
def test_esp_from_an_address_no_client_talks_to_is_dropped(spoofer):
    r = make_router()
    child = ChildSa(r, C1, S1, 0x1001, 0x2001).up()
    assert esp_in(r, spoofer, child.to_client.seal(b"forged"), now=2.0) == []   # a learned SPI, wrong sender
    assert esp_in(r, spoofer, EspSa(0x9999, spoofer, C1).seal(), now=2.0) == []  # an unknown one
    assert r.counters["drop_esp_no_association"] == 2
    assert child.delivered_in(child.into(now=3.0)) == b"down"


def test_an_spi_learned_for_one_gateway_never_matches_esp_from_another():
    r = make_router()
    one = ChildSa(r, C1, S1, 0x1001, 0x2001).up()
    other = ChildSa(r, C2, S2, 0x1001, 0x2001)           # S2 happens to use the very same SPIs with C2
    assert other.delivered_out(other.out(now=2.0)) == b"up"
    for n in range(3):
        assert other.delivered_in(other.into(now=3.0 + n)) == b"down"
        assert one.delivered_in(one.into(now=3.5 + n)) == b"down"
    assert association(r, C2, S2)["esp_spi_in"] == "00002001" and association(r, C1, S1)["esp_spi_in"] == "00002001"
    assert r.counters["ipsec_esp_ambiguous"] == 0
    # C1's outbound SPI towards S2 is a new association, not the one with S1
    assert esp_out(r, C1, S2, one.to_gateway.seal(b"x"), now=9.0)[0][IP].dst == S2
    assert association(r, C1, S2, now=9.0)["esp_spi_in"] is None


@pytest.mark.parametrize("esp", [b"", b"\x00\x00\x10\x01", bytes.fromhex("00001001000000"), bytes(8),
                                 bytes(4) + b"\x00\x00\x00\x07" + bytes(40)],
                         ids=["empty", "4_bytes", "7_bytes", "8_zero_bytes", "spi_0"])
@pytest.mark.parametrize("outbound", [True, False], ids=["out", "in"])
def test_malformed_esp_is_dropped(esp, outbound):
    r = make_router()
    ChildSa(r, C1, S1, 0x1001, 0x2001).up()
    learned = r.counters["ipsec_esp_learned"]
    got = esp_out(r, C1, S1, esp, now=2.0) if outbound else esp_in(r, S1, esp, now=2.0)
    assert got == [] and r.counters["drop_esp_malformed"] == 1
    assert r.counters["ipsec_esp_learned"] == learned
    a = association(r, C1)
    assert (a["esp_spi_out"], a["esp_spi_in"]) == ("00001001", "00002001")


# -- fragments: ESP and GRE --------------------------------------------------------------------------------------------

ORDERS = {"first_then_later": lambda p: p, "later_before_first": lambda p: p[1:] + p[:1],
          "reversed": lambda p: p[::-1]}


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("outbound", [True, False], ids=["out", "in"])
def test_esp_fragments_are_forwarded_with_addresses_rewritten(outbound, order):
    r = make_router()
    child = ChildSa(r, C1, S1, 0x1001, 0x2001).up()
    data = bytes(range(256)) * 5
    sa = child.to_gateway if outbound else child.to_client
    esp = sa.seal(data)
    whole = from_lan(C1, S1, Raw(esp), proto=50, id=4242) if outbound else from_wan(S1, Raw(esp), proto=50, id=4242)
    pieces = fragments(whole, 400)
    assert len(pieces) == 4
    out = []
    for piece in ORDERS[order](pieces):
        out += step(r, LAN if outbound else WAN, piece, 2.0)[WAN if outbound else LAN]
    assert len(out) == len(pieces)
    for pkt in out:
        expected = (WAN_IP, S1) if outbound else (S1, C1)
        assert (pkt[IP].src, pkt[IP].dst, pkt[IP].id, pkt[IP].proto) == (*expected, 4242, 50)
    assert reassemble(out) == esp
    assert sa.open(reassemble(out)) == data


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("outbound", [True, False], ids=["out", "in"])
def test_gre_fragments_of_a_pptp_call_are_forwarded_with_addresses_rewritten(outbound, order):
    r = make_router()
    call_up(Control(r, C2, S1, inside_port=40001), 0, 127)    # C2 holds Call ID 0 towards S1
    translated = call_up(Control(r, C1, S1), 0, 128)          # so C1's 0 is translated
    assert translated != 0
    data = b"\xff\x03\x00\x21" + bytes(range(200)) * 5
    call_id = 128 if outbound else translated
    gre = GRE_PPTP(key_present=1, seqnum_present=1, call_id=call_id, payload_len=len(data), sequence_number=7)
    whole = from_lan(C1, S1, gre / Raw(data), id=999) if outbound else from_wan(S1, gre / Raw(data), id=999)
    pieces = fragments(whole, 256)
    assert len(pieces) >= 3
    out = []
    for piece in ORDERS[order](pieces):
        out += step(r, LAN if outbound else WAN, piece, 2.0)[WAN if outbound else LAN]
    assert len(out) == len(pieces)
    for pkt in out:
        assert (pkt[IP].src, pkt[IP].dst) == ((WAN_IP, S1) if outbound else (S1, C1))
    gre_back = GRE_PPTP(reassemble(out))
    assert gre_back.call_id == (128 if outbound else 0) and bytes(gre_back.payload)[:len(data)] == data


# -- the switch --------------------------------------------------------------------------------------------------------

def test_switch_off_refuses_ipsec_both_ways_and_tears_down_then_on_again():
    r = make_router()
    c = ike_pair(r, C1, 1)
    n = c.float_to_natt()
    n.send()
    n.answer()
    child = ChildSa(r, C1, S1, 0x1001, 0x2001).up()
    assert associations(r) and len(udp_sessions(r)) == 2
    events(r)
    r.set_passthrough("ipsec", False, 5.0)
    assert associations(r, 5.0) == [] and udp_sessions(r, 5.0) == []
    assert [(e["client"], e["ike_spi_i"]) for e in of_kind(events(r), "ike_down")] == [(C1, spi(1).hex())]
    before = r.counters["drop_passthrough_off"]
    assert IkeClient(r, C2, S1, spi_i=spi(2)).send(now=6.0) == []                              # new IKE out
    assert IkeClient(r, C2, S1, spi_i=spi(2), port=NATT_PORT, remote_port=NATT_PORT).send(now=6.0) == []
    assert child.out(now=6.0) == []                                                             # ESP out
    assert child.into(now=6.0) == []                                                            # ESP in
    assert r.counters["drop_passthrough_off"] == before + 4
    assert c.answer(now=6.0) == [] and n.answer(now=6.0) == []                                  # IKE, NAT-T in
    assert associations(r, 6.0) == [] and udp_sessions(r, 6.0) == []
    r.set_passthrough("ipsec", True, 7.0)
    again = ike_pair(r, C2, 2, now=8.0).float_to_natt()
    assert again.send(now=8.0) and again.answer(now=8.0)
    ChildSa(r, C2, S1, 0x1002, 0x2002).up(now=8.0)
    a = association(r, C2, now=8.0)
    assert a["state"] == "established" and a["ike_spi_i"] == spi(2).hex()


def test_switch_off_refuses_inbound_ike_natt_and_esp_to_a_gateway_on_the_lan():
    """A gateway behind port forwards of 500 and 4500: the inbound direction of the switch."""
    r = make_router(forward=[{"proto": "udp", "port": IKE_PORT, "to": f"{C2}:{IKE_PORT}"},
                             {"proto": "udp", "port": NATT_PORT, "to": f"{C2}:{NATT_PORT}"}])
    hello = ikev2(spi(5))
    (got,) = udp_in(r, S1, hello, IKE_PORT, now=1.0)
    assert got[IP].dst == C2 and payload(got) == hello
    r.set_passthrough("ipsec", False, 2.0)
    before = r.counters["drop_passthrough_off"]
    assert udp_in(r, S1, ikev2(spi(6)), IKE_PORT, now=3.0) == []
    assert udp_in(r, S2, natt(ikev2(spi(7))), NATT_PORT, NATT_PORT, now=3.0) == []
    assert esp_in(r, S1, EspSa(0x3001, S1, C2).seal(), now=3.0) == []
    assert r.counters["drop_passthrough_off"] == before + 3
    r.set_passthrough("ipsec", True, 4.0)
    (got,) = udp_in(r, S1, ikev2(spi(8)), IKE_PORT, now=5.0)
    assert got[IP].dst == C2


# -- malformed input ---------------------------------------------------------------------------------------------------

def _with_length(m: bytes, length: int) -> bytes:
    return m[:24] + length.to_bytes(4, "big") + m[28:]


MALFORMED_IKE = {
    "truncated_header": lambda m: m[:20],
    "header_only_27_bytes": lambda m: m[:27],
    "zero_initiator_spi": lambda m: bytes(8) + m[8:],
    "major_version_3": lambda m: m[:17] + b"\x30" + m[18:],
    "major_version_0": lambda m: m[:17] + b"\x00" + m[18:],
    "length_beyond_datagram": lambda m: _with_length(m, len(m) + 1),
    "length_below_28": lambda m: _with_length(m, 27),
    "length_zero": lambda m: _with_length(m, 0),
}


@pytest.mark.parametrize("name", MALFORMED_IKE)
@pytest.mark.parametrize("port", [IKE_PORT, NATT_PORT])
@pytest.mark.parametrize("outbound", [True, False], ids=["out", "in"])
def test_malformed_ike_is_forwarded_unparsed_and_counted(name, port, outbound):
    r = make_router()
    c = IkeClient(r, C1, S1, spi_i=spi(1), port=port, remote_port=port)
    c.send(now=1.0)
    c.answer(spi(2), now=1.0)
    events(r)
    data = c.frame(MALFORMED_IKE[name](ikev2(spi(1), spi(2), exchange="IKE_AUTH", msg_id=1)))
    if outbound:
        (pkt,) = udp_out(r, C1, S1, data, port, port, now=2.0)
        assert (pkt[IP].src, pkt[IP].dst, pkt[UDP].sport, pkt[UDP].dport) == (WAN_IP, S1, c.outside_port, port)
    else:
        (pkt,) = udp_in(r, S1, data, c.outside_port, port, now=2.0)
        assert (pkt[IP].src, pkt[IP].dst, pkt[UDP].sport, pkt[UDP].dport) == (S1, C1, port, port)
    assert payload(pkt) == data
    assert r.counters["ipsec_malformed"] == 1
    (report,) = of_kind(events(r), "ipsec_malformed")
    assert report["summary"] and "suppressed" in report
    (got,) = c.answer(now=3.0)                           # the SA goes on
    assert got[IP].dst == C1


def test_an_empty_datagram_on_port_500_is_malformed_ike():
    r = make_router()
    ike_pair(r, C1, 1)
    (pkt,) = udp_out(r, C1, S1, b"", now=2.0)
    assert payload(pkt) == b"" and r.counters["ipsec_malformed"] == 1


def test_a_flood_of_malformed_ike_is_counted_but_reported_at_a_limited_rate():
    r = make_router()
    c = ike_pair(r, C1, 1)
    events(r)
    for n in range(200):
        udp_out(r, C1, S1, ikev2(spi(1))[:20], now=2.0 + n * 0.001)
    assert r.counters["ipsec_malformed"] == 200
    reports = of_kind(events(r), "ipsec_malformed")
    assert 1 <= len(reports) <= 20
    assert c.answer(now=3.0)[0][IP].dst == C1


_S1_IKE = ikev2(spi(1), spi(101), exchange="IKE_AUTH", msg_id=1)
_TEMPLATES = {
    "ike": (IKE_PORT, _S1_IKE),
    "ike_v1": (IKE_PORT, ike(1, spi(3), spi(103))),
    "ike_new": (IKE_PORT, ikev2(spi(50))),
    "natt_ike": (NATT_PORT, natt(_S1_IKE)),
    "natt_esp": (NATT_PORT, EspSa(0xC0000001, C1, S1, nat_t=True).seal(b"x" * 40)),
    "keepalive": (NATT_PORT, KEEPALIVE),
    "esp": (None, EspSa(0x1001, C1, S1).seal(b"x" * 40)),
    "esp_in": (None, EspSa(0x2002, S1, C2).seal(b"x" * 40)),
}


def _busy_router(mode: str):
    """Two clients of S1 with IKE on 500, NAT-T on 4500 and raw ESP: every demultiplexing path in use."""
    r = make_router(**MODES[mode])
    ports = {}
    for i, client in enumerate((C1, C2)):
        c = ike_pair(r, client, 1 + 2 * i, now=1.0)
        n = c.float_to_natt()
        n.send(now=1.0)
        n.answer(now=1.0)
        ChildSa(r, client, S1, 0x1001 + i, 0x2001 + i).up(now=1.0)
        ports[client] = {IKE_PORT: c.outside_port, NATT_PORT: n.outside_port}
    return r, ports


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(MODES)),
       st.lists(st.tuples(st.sampled_from(sorted(_TEMPLATES)), st.booleans(), st.sampled_from([C1, C2]),
                          st.integers(0, 300), st.integers(0, 255), st.integers(0, 300)), min_size=1, max_size=8))
def test_no_ike_natt_or_esp_datagram_raises(mode, sends):
    """Mutated and truncated IKE, NAT-T and ESP, both ways, never raise; expiry then leaves nothing behind."""
    r, ports = _busy_router(mode)
    for kind, outbound, client, at, value, cut in sends:
        port, template = _TEMPLATES[kind]
        data = bytearray(template)
        if data:
            data[at % len(data)] = value
        data = bytes(data[:cut])
        if port is None:
            esp_out(r, client, S1, data, now=2.0) if outbound else esp_in(r, S1, data, now=2.0)
        elif outbound:
            udp_out(r, client, S1, data, port, port, now=2.0)
        else:
            udp_in(r, S1, data, ports[client][port], port, now=2.0)
    r.handle_timer(10_000.0)
    assert [i for i in r.session_infos(10_000.0) if i.vpn == "ipsec"] == []


# -- session ids -----------------------------------------------------------------------------------------------------

def test_session_ids_are_unique_across_nat_sessions_and_helper_flows():
    r = make_router()
    call_up(Control(r, C1, S1), 0, 128)                  # a TCP session and a PPTP call
    ike_pair(r, C2, 1)                                   # a UDP 500 session and an association
    ChildSa(r, C2, S1, 0x1001, 0x2001).up()
    ChildSa(r, C3, S2, 0x1002, 0x2002).up()              # an association with no NAT session
    step(r, LAN, from_lan(C3, S2, UDP(sport=5353, dport=53) / Raw(b"q")))   # a plain UDP session
    infos = [i.to_dict() for i in r.session_infos(5.0)]
    ids = [i["id"] for i in infos]
    assert len(ids) == len(set(ids)) == 6
    assert sorted(i["proto"] for i in infos) == ["esp", "esp", "gre", "tcp", "udp", "udp"]
    (ike_session,) = udp_sessions(r)
    assert ike_session["association"] == association(r, C2)["id"] != ike_session["id"]


# -- real strongSwan traffic from the captures -----------------------------------------------------------------------

def _replay(r, client: str, items, outside: dict, now: float) -> None:
    """Replay (from the client?, sport, dport, payload) datagrams as ``client``'s and S1's; each must arrive intact.

    ``outside`` maps the client's inside port (500/4500) to its outside port, filled in as datagrams leave.
    """
    for mine, sport, dport, data in items:
        port = IKE_PORT if IKE_PORT in (sport, dport) else NATT_PORT
        if mine:
            (pkt,) = udp_out(r, client, S1, data, port, port, now)
            outside.setdefault(port, pkt[UDP].sport)
            assert (pkt[IP].src, pkt[UDP].sport, payload(pkt)) == (WAN_IP, outside[port], data)
        else:
            (pkt,) = udp_in(r, S1, data, outside[port], port, now)
            assert (pkt[IP].dst, pkt[UDP].dport, payload(pkt)) == (client, port, data)


@pytest.mark.parametrize("mode", ["preserve", "translate"])
def test_real_strongswan_clients_replayed_through_the_router(mode):
    """C1 plays ike_natt_1cli's client, C2 natt_2cli's second client; their IKE interleaved on port 500."""
    one = conversation(capture("ike_natt_1cli.pcap"))
    two = conversation(capture("natt_2cli.pcap"))
    # natt_2cli: its second client is the one the kernel NAT moved to 395 (IKE) and 1696 (NAT-T)
    two = [m for m in two if (m[1] if m[0] else m[2]) in (395, 1696)]
    two = [m for m in two if m[3] != KEEPALIVE]
    keepalives = [(m[1], m[3]) for m in conversation(capture("natt_2cli.pcap")) if m[3] == KEEPALIVE]
    assert [sport for sport, _ in keepalives] == [NATT_PORT, 1696]    # the first client's, then the second's
    assert [len(m[3]) for m in two[:4]] == [464, 472, 308, 260]
    r = make_router(**MODES[mode])
    out1, out2 = {}, {}
    _replay(r, C1, one[0:1], out1, 1.0)                  # C1's first IKE_SA_INIT
    _replay(r, C2, two[0:1], out2, 1.1)                  # C2's IKE_SA_INIT, the same port 500 in preserve mode
    _replay(r, C2, two[1:2], out2, 1.2)                  # the gateway answers C2 first...
    _replay(r, C1, one[1:2], out1, 1.3)                  # ...then C1 (NO_PROPOSAL_CHOSEN)
    _replay(r, C1, one[2:4], out1, 1.4)                  # C1 tries again
    _replay(r, C1, one[4:6], out1, 2.0)                  # IKE_AUTH on 4500 behind the marker
    _replay(r, C2, two[2:4], out2, 2.1)
    for a, b in zip(one[6:], two[4:]):                   # their ESP in UDP, interleaved
        _replay(r, C1, [a], out1, 3.0)
        _replay(r, C2, [b], out2, 3.0)
    for client, outside, (_, data) in zip((C1, C2), (out1, out2), keepalives):
        (ka,) = udp_out(r, client, S1, data, NATT_PORT, NATT_PORT, 4.0)
        assert payload(ka) == KEEPALIVE and ka[UDP].sport == outside[NATT_PORT]
    if mode == "preserve":
        assert out1[IKE_PORT] == out2[IKE_PORT] == IKE_PORT
    else:
        assert out1[IKE_PORT] != out2[IKE_PORT]
    assert out1[NATT_PORT] != out2[NATT_PORT]
    assert r.counters["ipsec_natt_keepalives"] == 2
    assert r.counters["ipsec_ike_ambiguous"] == r.counters["ipsec_malformed"] == 0
    a1, a2 = association(r, C1), association(r, C2)
    assert as_list(a1["ike_spi_i"]) == ["4ff8a5ce199f85b2", "745ec65e0f4562be"]
    assert as_list(a1["ike_spi_r"]) == ["1589218a3c52976d", "9fa80796dd3c2e8e"]
    assert (a1["esp_spi_out"], a1["esp_spi_in"]) == ("8ba3e264", "81c1aa92")
    assert (a2["ike_spi_i"], a2["ike_spi_r"]) == ("efefe570a92877b2", "d457c973f47ddbd1")
    assert (a2["esp_spi_out"], a2["esp_spi_in"]) == ("1e6b342e", "f0612681")
    assert all(a["natt"] is True and a["state"] == "established" and a["ambiguous"] is False for a in (a1, a2))
    ups = of_kind(events(r), "ike_up")
    assert sorted((e["client"], e["ike_spi_i"], e["ike_spi_r"]) for e in ups) == [
        (C1, "4ff8a5ce199f85b2", "9fa80796dd3c2e8e"), (C1, "745ec65e0f4562be", "1589218a3c52976d"),
        (C2, "efefe570a92877b2", "d457c973f47ddbd1")]


def test_raw_esp_that_kernel_masquerade_dropped_reaches_both_clients():
    """esp_masq_2cli: Linux let only the first client's ESP out; here both clients get theirs, both ways."""
    packets = [p for p in capture("esp_masq_2cli.pcap") if p[IP].proto == 50]
    out1 = [bytes(p[IP].payload) for p in packets if p[IP].src == CAPTURE_CLIENT]
    back = {}
    for p in packets:
        if p[IP].src != CAPTURE_CLIENT:
            esp = bytes(p[IP].payload)
            back.setdefault(esp[:4].hex(), []).append(esp)
    out2 = [bytes.fromhex("22222222") + esp[4:] for esp in out1]   # the second client's: its SPI is all it changes
    r = make_router()

    def leaves(client, esp, now):
        (pkt,) = esp_out(r, client, S1, esp, now)
        assert (pkt[IP].src, pkt[IP].dst, bytes(pkt[IP].payload)) == (WAN_IP, S1, esp)

    def arrives(client, esp, now):
        (pkt,) = esp_in(r, S1, esp, now)
        assert (pkt[IP].src, pkt[IP].dst, bytes(pkt[IP].payload)) == (S1, client, esp)

    leaves(C1, out1[0], 1.0)
    arrives(C1, back["aaaa0001"][0], 1.1)
    leaves(C2, out2[0], 2.0)
    arrives(C2, back["aaaa0002"][0], 2.1)
    for n in range(1, 5):
        leaves(C2, out2[n], 3.0 + n)
        leaves(C1, out1[n], 3.0 + n)
    for n in (1, 2):
        arrives(C2, back["aaaa0002"][n], 9.0 + n)
        arrives(C1, back["aaaa0001"][n], 9.0 + n)
    a1, a2 = association(r, C1, now=12.0), association(r, C2, now=12.0)
    assert (a1["esp_spi_out"], a1["esp_spi_in"]) == ("11111111", "aaaa0001")
    assert (a2["esp_spi_out"], a2["esp_spi_in"]) == ("22222222", "aaaa0002")
    assert (a1["packets_out"], a1["packets_in"], a2["packets_out"], a2["packets_in"]) == (5, 3, 5, 3)
    assert r.counters["ipsec_esp_ambiguous"] == 0 and not a1["ambiguous"] and not a2["ambiguous"]
