"""L2TP passthrough (RFC 2661): Tunnel ID translation on a shared port 1701, demultiplexing, sessions, malformed input.

Every frame the router emits has its UDP checksum recomputed by scapy
(``frames.step``); the messages are built byte by byte in ``l2tp_frames``
and read back with its own parser, never the router's.
"""

import struct

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.l2tp import L2TP
from scapy.packet import Raw
from scapy.utils import checksum as scapy_checksum, rdpcap

from tests.unit.frames import C1, C2, C3, LAN, S1, S2, WAN, WAN_IP, from_lan, learn, make_router, partial_frame, step
from tests.unit.l2tp_frames import (CONTROL, L_BIT, S_BIT, T_BIT, VERSION, Avp, Lac, MT, avp, cdn, control, data,
                         hello, hidden_avp, icrp, icrq, iccn, into, message_type, occn, ocrp, ocrq, out, parse,
                         scccn, sccrp, sccrq, sli, stopccn, u16, udp_payload, wen, with_u16, zlb)

DATA = __import__("pathlib").Path(__file__).parents[1] / "data"
TRANSLATE = {"l2tp": {"port": "translate"}}
LNS_TID = 200          # the LNS's own Tunnel ID in the tests that need one


def tunnels(r, now: float = 5.0) -> list[dict]:
    """The L2TP tunnels as ``ctl sessions --json`` shows them."""
    return [i.to_dict() for i in r.session_infos(now) if i.vpn == "l2tp" and i.proto == "l2tp"]


def udp_sessions(r, now: float = 5.0) -> list[dict]:
    """The UDP NAT sessions that carry L2TP."""
    return [i.to_dict() for i in r.session_infos(now) if i.vpn == "l2tp" and i.proto == "udp"]


def events(r) -> list[tuple[str, dict]]:
    """The L2TP events since the last call: (kind, details)."""
    return [(e.kind, dict(e.details)) for e in iter(r.next_event, None) if getattr(e, "vpn", None) == "l2tp"]


def kinds(r) -> list[str]:
    return [kind for kind, _ in events(r)]


def established(r, client: str, tunnel_id: int = 7, peer: int = LNS_TID, lns: str = S1, **kw) -> Lac:
    return Lac(r, client, lns, tunnel_id, **kw).up(peer)


def colliding_pair(r) -> Lac:
    """C2 holds Tunnel ID 7 towards S1; C1 then asks for 7 too: C1's is the one the router must translate."""
    established(r, C2, 7, peer=100)
    lac = established(r, C1, 7, peer=LNS_TID)
    assert lac.translated != 7
    return lac


# -- the builders, checked against what xl2tpd sent and against scapy ---------------------------------------------

def capture() -> list:
    return [p for p in rdpcap(str(DATA / "l2tp_fake_2cli.pcap")) if UDP in p and 1701 in (p[UDP].sport, p[UDP].dport)]


def test_builders_make_the_bytes_xl2tpd_sent():
    sent = [bytes(p[UDP].payload) for p in capture()]
    assert sccrq(0x0CBF, "vm") == sent[0]
    assert sccrp(0x0CBF, 0x9FD2, "vm") == sent[1]
    assert scccn(0x9FD2) == sent[2]
    assert zlb(0x0CBF, 1, 2) == sent[3]
    assert icrq(0x9FD2, 0xA04F) == sent[4]
    assert icrp(0x0CBF, 0xA04F, 0x3C4B) == sent[5]
    assert iccn(0x9FD2, 0x3C4B) == sent[7]
    assert data(0x0CBF, 0xA04F, sent[9][8:]) == sent[9]
    assert sccrq(0x4D21, "vm") == sent[21]    # the second LAC: only its Tunnel ID differs


ALL_CONTROL = {
    MT.SCCRQ: sccrq(7), MT.SCCRP: sccrp(7, 8), MT.SCCCN: scccn(8), MT.STOPCCN: stopccn(8, 7), MT.HELLO: hello(8),
    MT.OCRQ: ocrq(8, 41), MT.OCRP: ocrp(8, 41, 42), MT.OCCN: occn(8, 41), MT.ICRQ: icrq(8, 51),
    MT.ICRP: icrp(8, 51, 52), MT.ICCN: iccn(8, 52), MT.CDN: cdn(8, 52, 51), MT.WEN: wen(8, 52), MT.SLI: sli(8, 52),
}


@pytest.mark.parametrize("kind", list(ALL_CONTROL))
def test_builders_read_back_by_scapy(kind):
    message = ALL_CONTROL[kind]
    theirs, ours = L2TP(message), parse(message)
    assert int(theirs.hdr) == CONTROL >> 4 and theirs.version == 2
    assert theirs.len == len(message) == ours.length
    assert (theirs.tunnel_id, theirs.session_id, theirs.ns, theirs.nr) == \
        (ours.tunnel_id, ours.session_id, ours.ns, ours.nr)
    assert ours.type == kind and ours.avps[0].attr == Avp.MESSAGE_TYPE


@pytest.mark.parametrize("options", [{}, {"length": False}, {"sequence": True, "ns": 3, "nr": 4},
                                     {"offset": b"\0\0\0", "length": False}, {"priority": True}])
def test_data_builder_read_back_by_scapy(options):
    message = data(0x1234, 0x5678, **options)
    theirs, ours = L2TP(message), parse(message)
    assert not theirs.hdr & "control" and (theirs.tunnel_id, theirs.session_id) == (0x1234, 0x5678)
    assert (ours.tunnel_id, ours.session_id) == (0x1234, 0x5678)
    if options.get("sequence"):
        assert (theirs.ns, theirs.nr) == (3, 4)


def test_hidden_avp_is_laid_out_as_rfc_2661_section_4_3_says():
    avps = parse(sccrq(7, hide_tunnel_id=b"secret")).avps
    (at,) = [i for i, a in enumerate(avps) if a.attr == Avp.ASSIGNED_TUNNEL_ID]
    hidden = avps[at]
    assert hidden.hidden and len(hidden.value) == 2 + 2 + 3      # original length, value, padding
    assert avps[at - 1].attr == Avp.RANDOM_VECTOR
    assert hidden.value != u16(2) + u16(7) + bytes(3)            # obfuscated


# -- each message type, both directions: what changes and what stays byte for byte --------------------------------
# A builder gets (the receiver's Tunnel ID for the header, the sender's own Tunnel ID).
MESSAGES = {
    "SCCRQ": lambda hdr, own: sccrq(own),
    "SCCRP": lambda hdr, own: sccrp(hdr, own),
    "SCCCN": lambda hdr, own: scccn(hdr),
    "StopCCN": lambda hdr, own: stopccn(hdr, own),
    "HELLO": lambda hdr, own: hello(hdr),
    "OCRQ": lambda hdr, own: ocrq(hdr, 41),
    "OCRP": lambda hdr, own: ocrp(hdr, 41, 42),
    "OCCN": lambda hdr, own: occn(hdr, 41),
    "ICRQ": lambda hdr, own: icrq(hdr, 51),
    "ICRP": lambda hdr, own: icrp(hdr, 51, 52),
    "ICCN": lambda hdr, own: iccn(hdr, 52),
    "CDN": lambda hdr, own: cdn(hdr, 52, 51),
    "WEN": lambda hdr, own: wen(hdr, 52),
    "SLI": lambda hdr, own: sli(hdr, 52),
    "ZLB": lambda hdr, own: zlb(hdr, 3, 3),
    "data": lambda hdr, own: data(hdr, 52),
    "data, no length": lambda hdr, own: data(hdr, 52, length=False),
    "data, sequence": lambda hdr, own: data(hdr, 52, sequence=True, ns=9, nr=1),
    "data, offset": lambda hdr, own: data(hdr, 52, length=False, offset=b"\0\0\0\0"),
    "data, priority": lambda hdr, own: data(hdr, 52, priority=True, length=False),
    # Ns 300: an Offset Size read where Ns stands would run past the message
    "data, sequence and offset": lambda hdr, own: data(hdr, 52, sequence=True, ns=300, nr=1, offset=b"\0\0"),
}
# Messages in which the client announces its own Tunnel ID: the router puts the translation there.
ANNOUNCES_TUNNEL_ID = {"SCCRQ", "SCCRP", "StopCCN"}


@pytest.mark.parametrize("setting", ["preserve, translated", "preserve, alone", "translate, same ID"])
@pytest.mark.parametrize("outbound", [True, False], ids=["LAC to LNS", "LNS to LAC"])
@pytest.mark.parametrize("name", list(MESSAGES))
def test_message_table(name, outbound, setting):
    r = make_router(**(TRANSLATE if setting.startswith("translate") else {}))
    if setting == "preserve, alone":
        lac = established(r, C1, 7)
    elif setting == "preserve, translated":
        lac = colliding_pair(r)
    else:
        established(r, C2, 7, peer=100)
        lac = established(r, C1, 7)
        assert lac.translated == 7 and lac.outside_port != 1701
    build = MESSAGES[name]
    translated = lac.translated
    if outbound:
        sent = build(LNS_TID, 7)
        expected = build(LNS_TID, translated) if name in ANNOUNCES_TUNNEL_ID else sent
        assert lac.send(sent, now=2.0) == expected
    elif name == "SCCRQ" and setting == "preserve, translated":
        # header Tunnel ID 0 on a port two LACs share with S1: nobody to give it to (RFC 2661 §5.1 names no one)
        assert into(r, S1, build(0, LNS_TID), now=2.0) == []
        assert r.counters["drop_shared_port_unmatched"] == 1
    else:
        sent = build(translated, LNS_TID)
        assert lac.receive(sent, now=2.0) == build(7, LNS_TID)
    if setting != "preserve, translated":
        assert translated == 7     # nothing to translate: every message crossed byte for byte
    assert r.counters["l2tp_malformed"] == 0


# -- several LACs with one Tunnel ID, one LNS ---------------------------------------------------------------------

@pytest.mark.parametrize("clients", [(C1, C2), (C1, C2, C3)])
def test_lacs_with_the_same_tunnel_id_share_port_1701_in_preserve_mode(clients):
    r = make_router()
    lacs = [Lac(r, c, S1, 7) for c in clients]
    requests = [lac.request() for lac in lacs]      # all ask first, the LNS answers later, in reverse
    assert all(lac.outside_port == 1701 for lac in lacs)
    translated = [lac.translated for lac in lacs]
    assert translated[0] == 7 and len(set(translated)) == len(clients)
    for lac, seen in zip(lacs, requests):           # the AVP is the only change
        assert seen == sccrq(lac.translated)
    for i, lac in reversed(list(enumerate(lacs))):
        assert lac.reply(LNS_TID + i) == sccrp(7, LNS_TID + i)
        assert lac.connect() == scccn(LNS_TID + i)
        assert lac.receive(zlb(lac.translated, 1, 2)) == zlb(7, 1, 2)
    for i, lac in enumerate(lacs):
        lac.call(session_id=10, peer_session_id=20 + i)
        assert lac.data_in(10) == data(7, 10)
        assert lac.data_out(20 + i) == data(LNS_TID + i, 20 + i)
    assert sorted((t["client"], t["tunnel_id"], t["translated_tunnel_id"]) for t in tunnels(r)) == \
        sorted(zip(clients, [7] * len(clients), translated))
    assert all(t["state"] == "established" for t in tunnels(r))


@pytest.mark.parametrize("clients", [(C1, C2), (C1, C2, C3)])
def test_lacs_with_the_same_tunnel_id_get_their_own_ports_in_translate_mode(clients):
    r = make_router(**TRANSLATE)
    lacs = [Lac(r, c, S1, 7) for c in clients]
    requests = [lac.request() for lac in lacs]
    assert requests == [sccrq(7)] * len(clients)    # nothing rewritten
    ports = [lac.outside_port for lac in lacs]
    assert ports[0] == 1701 and len(set(ports)) == len(clients)
    for i, lac in reversed(list(enumerate(lacs))):
        assert lac.reply(LNS_TID + i) == sccrp(7, LNS_TID + i)
        assert lac.connect() == scccn(LNS_TID + i)
    for i, lac in enumerate(lacs):
        lac.call(session_id=10, peer_session_id=20 + i)
        assert lac.data_in(10) == data(7, 10)
        assert lac.data_out(20 + i) == data(LNS_TID + i, 20 + i)
    assert sorted(t["client"] for t in tunnels(r)) == sorted(clients)
    assert all(t["translated_tunnel_id"] == t["tunnel_id"] == 7 for t in tunnels(r))


def test_a_lac_whose_own_id_is_another_lacs_translation_is_translated_too():
    r = make_router()
    established(r, C2, 7, peer=100)
    third = established(r, C3, 7, peer=101)
    taken = third.translated
    lac = established(r, C1, taken, peer=102)       # C1 happens to choose the ID C3 got towards S1
    assert lac.translated not in (7, taken)
    assert lac.data_in(5) == data(taken, 5)
    assert third.data_in(5) == data(7, 5)


def test_different_lnss_may_see_the_same_tunnel_id():
    """Unique per (router address, LNS): towards another LNS the client's own ID is free."""
    r = make_router()
    a = established(r, C1, 7, lns=S1)
    b = established(r, C2, 7, lns=S2)
    assert a.translated == b.translated == 7
    assert a.data_in(10) == data(7, 10) and b.data_in(10) == data(7, 10)


def test_inbound_message_for_no_known_tunnel_is_dropped_on_a_shared_port():
    r = make_router()
    established(r, C1, 7)
    established(r, C2, 8, peer=100)
    assert into(r, S1, data(9, 1)) == []
    assert into(r, S1, hello(9)) == []
    assert r.counters["drop_shared_port_unmatched"] == 2


# -- the capture: real xl2tpd messages -----------------------------------------------------------------------------

def _conversations():
    """The capture's two LAC <-> LNS conversations, each a list of (from the LAC?, payload), in capture order."""
    lac = "203.0.113.1"
    packets = capture()
    return [[(p[IP].src == lac, bytes(p[UDP].payload)) for p in packets
             if (p[IP].src, p[UDP].sport) == (lac, port) or (p[IP].dst, p[UDP].dport) == (lac, port)]
            for port in (1701, 61431)]


def test_real_xl2tpd_lacs_replayed_through_the_router():
    """Both LACs' control and data, interleaved as captured, from C1 and C2 with their own Tunnel IDs."""
    r = make_router()
    convs = _conversations()
    assert [len(c) for c in convs] == [57, 49]
    for i in range(max(len(c) for c in convs)):
        for client, conv in zip((C1, C2), convs):
            if i >= len(conv):
                continue
            from_lac, payload = conv[i]
            if from_lac:
                (pkt,) = out(r, client, payload, S1, chksum=0)
                assert pkt[UDP].sport == 1701
            else:
                (pkt,) = into(r, S1, payload, chksum=0)
                assert pkt[IP].dst == client
            assert udp_payload(pkt) == payload and pkt[UDP].chksum == 0
    assert sorted((t["client"], t["tunnel_id"], t["peer_tunnel_id"], t["state"], len(t["sessions"]))
                  for t in tunnels(r)) == [(C1, 0x0CBF, 0x9FD2, "established", 1),
                                           (C2, 0x4D21, 0xD0D4, "established", 1)]
    assert [t["host_name"] for t in tunnels(r)] == ["vm", "vm"]
    assert r.counters["l2tp_tunnels_up"] == r.counters["l2tp_sessions_up"] == 2
    assert r.counters["l2tp_malformed"] == 0


def test_the_first_lacs_capture_from_two_clients_at_once():
    """The same captured exchange from C1 and C2: one Tunnel ID, so C2's is translated, with zero checksums."""
    r = make_router()
    conv = [(from_lac, payload) for from_lac, payload in _conversations()[0] if payload[0] & 0x80]   # control
    translated = {}
    for client, lns_tid in ((C1, 0x9FD2), (C2, 0x9FD3)):
        for from_lac, payload in conv:
            if from_lac:
                (pkt,) = out(r, client, with_u16(payload, 4, lns_tid) if parse(payload).tunnel_id else payload,
                             S1, chksum=0)
                seen = udp_payload(pkt)
                if parse(payload).type == MT.SCCRQ:
                    translated[client] = parse(seen).value(Avp.ASSIGNED_TUNNEL_ID)
                    assert seen == with_u16(payload, parse(payload).avp(Avp.ASSIGNED_TUNNEL_ID).at,
                                            translated[client])
            else:   # the LNS addresses the LAC as it was told, and announces its own ID for this LAC
                reply = with_u16(payload, 4, translated[client])
                if parse(reply).type == MT.SCCRP:
                    reply = with_u16(reply, parse(reply).avp(Avp.ASSIGNED_TUNNEL_ID).at, lns_tid)
                (pkt,) = into(r, S1, reply, chksum=0)
                assert pkt[IP].dst == client and udp_payload(pkt) == with_u16(reply, 4, 0x0CBF)
            assert pkt[UDP].chksum == 0
    assert translated[C1] == 0x0CBF and translated[C2] != 0x0CBF
    assert all(t["state"] == "established" and len(t["sessions"]) == 1 for t in tunnels(r))


# -- UDP checksums ------------------------------------------------------------------------------------------------

def test_checksums_follow_the_rewrites_at_even_and_odd_offsets():
    """step() has scapy recompute every UDP checksum; an odd Host Name puts the Tunnel ID at an odd offset."""
    offsets = set()
    for host in ("lac", "lac1"):
        r = make_router()
        established(r, C2, 7, peer=100)
        lac = Lac(r, C1, S1, 7, host_name=host)
        seen = lac.request()
        offsets.add(parse(seen).avp(Avp.ASSIGNED_TUNNEL_ID).at % 2)
        assert lac.translated != 7 and seen == sccrq(lac.translated, host)
        assert lac.reply(LNS_TID) == sccrp(7, LNS_TID, host_name="lns")
    assert offsets == {0, 1}


def test_a_zero_udp_checksum_stays_zero_in_both_directions():
    r = make_router()
    established(r, C2, 7, peer=100)
    lac = Lac(r, C1, S1, 7)
    seen = lac.send(sccrq(7), chksum=0)
    translated = parse(seen).value(Avp.ASSIGNED_TUNNEL_ID)
    assert translated != 7
    (pkt,) = into(r, S1, sccrp(translated, LNS_TID), chksum=0)
    assert pkt[UDP].chksum == 0 and udp_payload(pkt) == sccrp(7, LNS_TID)
    (pkt,) = out(r, C1, sccrq(7), S1, chksum=0)
    assert pkt[UDP].chksum == 0 and udp_payload(pkt) == sccrq(translated)


@pytest.mark.parametrize("zero_at", ["leaving", "after the Tunnel ID"])
def test_a_checksum_that_comes_out_zero_is_sent_as_ffff(zero_at):
    """RFC 768: a computed checksum of zero is sent as all ones, never as "no checksum".

    A free word (the Firmware Revision's value) is chosen so that the checksum
    is zero either as the datagram leaves (WAN address) or right after the
    Tunnel ID is rewritten, while it still has the LAN address.
    """
    def router_and_lac():
        r = make_router(seed=5)
        established(r, C2, 7, peer=100)
        return r, Lac(r, C1, S1, 7)
    _, probe = router_and_lac()
    translated = parse(probe.request()).value(Avp.ASSIGNED_TUNNEL_ID)   # the same seed: the same translation
    message = bytearray(sccrq(translated))
    at = parse(bytes(message)).avp(Avp.FIRMWARE_REVISION).at
    assert at % 2 == 0
    message[at:at + 2] = b"\0\0"
    source = WAN_IP if zero_at == "leaving" else C1
    pseudo = struct.pack("!4s4sBBH", bytes(map(int, source.split("."))), bytes(map(int, S1.split("."))), 0, 17,
                         8 + len(message))
    udp = struct.pack("!HHHH", 1701, 1701, 8 + len(message), 0)
    rest = scapy_checksum(pseudo + udp + bytes(message))   # the checksum with the free word zero
    message[at:at + 2] = u16(rest)                         # adds ~sum: the data now sums to 0xFFFF
    assert scapy_checksum(pseudo + udp + bytes(message)) == 0
    sent = with_u16(bytes(message), parse(bytes(message)).avp(Avp.ASSIGNED_TUNNEL_ID).at, 7)
    r, lac = router_and_lac()
    (pkt,) = out(r, C1, sent, S1)
    assert udp_payload(pkt) == bytes(message)
    if zero_at == "leaving":
        assert pkt[UDP].chksum == 0xFFFF
    else:          # any value the oracle accepts, but not zero: the sender asked for a checksum
        assert pkt[UDP].chksum != 0


def test_a_partial_checksum_frame_is_translated_too():
    """The kernel's NEEDS_CSUM frames: the payload changes, the field keeps the pseudo-header sum."""
    r = make_router()
    established(r, C2, 7, peer=100)
    frame = partial_frame(from_lan(C1, S1, UDP(sport=1701, dport=1701) / Raw(sccrq(7))))
    (pkt,) = step(r, LAN, frame)[WAN]      # the oracle checks the partial sum
    seen = udp_payload(pkt)
    assert pkt.vnet_flags & 1 and parse(seen).value(Avp.ASSIGNED_TUNNEL_ID) != 7
    assert seen == sccrq(parse(seen).value(Avp.ASSIGNED_TUNNEL_ID))


# -- an LNS answering from another port (RFC 2661 §8.1) -----------------------------------------------------------

@pytest.mark.parametrize("mode", ["preserve", "translate"])
def test_an_lns_answering_from_another_port_reaches_the_lac(mode):
    r = make_router(**(TRANSLATE if mode == "translate" else {}))
    first = established(r, C2, 7, peer=100)
    lac = Lac(r, C1, S1, 7)
    lac.request()
    assert (lac.translated != 7) == (mode == "preserve")
    assert lac.reply(LNS_TID, sport=1702) == sccrp(7, LNS_TID)      # from S1:1702 to the LAC's 1701
    assert lac.connect() == scccn(LNS_TID)                           # and the LAC now talks to 1702
    assert lac.receive(zlb(lac.translated, 1, 2)) == zlb(7, 1, 2)
    lac.call(10, 20)
    assert lac.data_in(10) == data(7, 10) and lac.data_out(20) == data(LNS_TID, 20)
    assert first.data_in(10) == data(7, 10)                          # the other LAC still on 1701
    mine = [t for t in tunnels(r) if t["client"] == C1]
    assert [t["state"] for t in mine] == ["established"] and mine[0]["peer_tunnel_id"] == LNS_TID


@pytest.mark.parametrize("mode", ["preserve", "translate"])
def test_address_and_port_dependent_filtering_refuses_an_lns_on_another_port(mode):
    """RFC 4787 §5 holds for the helper's mappings too: under address-and-port-dependent filtering an answer
    from the LNS's other port is unsolicited, so a LAC whose LNS does that cannot connect (as behind such NATs)."""
    r = make_router(nat={"filtering": "address-and-port-dependent"}, **(TRANSLATE if mode == "translate" else {}))
    lac = Lac(r, C1, S1, 7)
    lac.request()
    assert lac.reply(LNS_TID, sport=1702) is None
    assert r.counters["drop_unsolicited"] == 1
    assert lac.reply(LNS_TID, sport=1701) == sccrp(7, LNS_TID)      # from 1701, the port it was sent to


# -- sessions in a tunnel -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("cdn_from", ["LAC", "LNS"])
def test_several_sessions_in_one_tunnel(cdn_from):
    r = make_router()
    lac = colliding_pair(r)
    events(r)
    lac.call(session_id=11, peer_session_id=21)
    lac.call(session_id=12, peer_session_id=22)
    (tunnel,) = [t for t in tunnels(r) if t["client"] == C1]
    assert sorted(tunnel["sessions"], key=lambda s: s["session_id"]) == [
        {"session_id": 11, "peer_session_id": 21, "state": "established"},
        {"session_id": 12, "peer_session_id": 22, "state": "established"}]
    ups = [(kind, d) for kind, d in events(r) if kind == "session_up"]
    assert sorted((d["session_id"], d["peer_session_id"]) for _, d in ups) == [(11, 21), (12, 22)]
    assert all(d["client"] == C1 and d["tunnel_id"] == 7 and d["translated_tunnel_id"] == lac.translated
               and d["peer_tunnel_id"] == LNS_TID and d["lns"] == S1 and d["id"] == tunnel["id"] for _, d in ups)
    if cdn_from == "LAC":
        assert lac.send(cdn(LNS_TID, 21, 11)) == cdn(LNS_TID, 21, 11)
    else:
        assert lac.receive(cdn(lac.translated, 11, 21)) == cdn(7, 11, 21)
    (tunnel,) = [t for t in tunnels(r) if t["client"] == C1]
    assert tunnel["sessions"] == [{"session_id": 12, "peer_session_id": 22, "state": "established"}]
    (down,) = [d for kind, d in events(r) if kind == "session_down"]
    assert (down["session_id"], down["peer_session_id"], down["client"]) == (11, 21, C1) and down["reason"]
    assert r.counters["l2tp_sessions_up"] == 2 and r.counters["l2tp_sessions_down"] == 1
    assert lac.data_in(12) == data(7, 12)       # the other session carries on


def test_an_outgoing_call_from_the_lns():
    """OCRQ from the LNS, OCRP and OCCN from the LAC (RFC 2661 §6.9-6.11)."""
    r = make_router()
    lac = colliding_pair(r)
    assert lac.receive(ocrq(lac.translated, 31)) == ocrq(7, 31)
    assert lac.send(ocrp(LNS_TID, 31, 41)) == ocrp(LNS_TID, 31, 41)
    assert lac.send(occn(LNS_TID, 31)) == occn(LNS_TID, 31)
    (tunnel,) = [t for t in tunnels(r) if t["client"] == C1]
    assert tunnel["sessions"] == [{"session_id": 41, "peer_session_id": 31, "state": "established"}]
    assert [d["session_id"] for kind, d in events(r) if kind == "session_up"] == [41]


# -- ends ---------------------------------------------------------------------------------------------------------

def _down(r, client: str = C1) -> list[dict]:
    return [d for kind, d in events(r) if kind == "tunnel_down" and d["client"] == client]


@pytest.mark.parametrize("who", ["LAC", "LNS"])
def test_stopccn_ends_the_tunnel_and_its_sessions(who):
    r = make_router()
    lac = colliding_pair(r)
    lac.call(11, 21)
    events(r)
    if who == "LAC":
        assert lac.send(stopccn(LNS_TID, 7, ns=3, nr=3)) == stopccn(LNS_TID, lac.translated, ns=3, nr=3)
        assert lac.receive(zlb(lac.translated, 3, 4)) == zlb(7, 3, 4)       # the ack crosses
    else:
        assert lac.receive(stopccn(lac.translated, LNS_TID)) == stopccn(7, LNS_TID)
        assert lac.send(zlb(LNS_TID, 3, 3)) == zlb(LNS_TID, 3, 3)
    seen = events(r)
    assert [k for k, d in seen if d.get("client") == C1] == ["session_down", "tunnel_down"]
    assert r.counters["l2tp_tunnels_down"] == 1 and r.counters["l2tp_sessions_down"] == 1
    assert [t["state"] for t in tunnels(r) if t["client"] == C1] in ([], ["stopping"])
    r.handle_timer(100.0)      # a retransmission cycle later (RFC 2661 §5.7), well inside timeouts.l2tp
    assert [t["client"] for t in tunnels(r, 100.0)] == [C2]
    assert into(r, S1, data(lac.translated, 11), now=100.0) == []   # C2 holds the port too: no one to give it to
    assert [k for k, d in events(r) if d.get("client") == C1] == []


def test_idle_tunnel_expires_after_timeouts_l2tp():
    r = make_router(timeouts={"l2tp": 60})
    lac = established(r, C1, 7)
    lac.call(11, 21)
    events(r)
    assert lac.data_in(11, now=30.0) == data(7, 11)
    r.handle_timer(89.0)
    assert [t["state"] for t in tunnels(r, 89.0)] == ["established"] and udp_sessions(r, 89.0)
    assert not [k for k in kinds(r) if k.endswith("_down")]
    r.handle_timer(91.0)
    assert tunnels(r, 91.0) == [] and udp_sessions(r, 91.0) == []
    (down,) = _down(r)
    assert down["reason"] and down["tunnel_id"] == 7
    assert r.counters["l2tp_tunnels_down"] == 1
    assert into(r, S1, data(7, 11), now=92.0) == []


def test_an_idle_tunnel_expires_while_another_keeps_its_nat_session_alive():
    """Two tunnels from one LAC to one LNS share a NAT session: the idle one goes alone."""
    r = make_router(timeouts={"l2tp": 60})
    established(r, C1, 7, peer=LNS_TID)
    busy = established(r, C1, 8, peer=LNS_TID + 1)
    events(r)
    for now in (30.0, 60.0, 90.0):
        assert busy.data_in(11, now=now) == data(8, 11)
        r.handle_timer(now)
    assert [(t["tunnel_id"], t["state"]) for t in tunnels(r, 90.0)] == [(8, "established")]
    assert [d["tunnel_id"] for d in _down(r)] == [7]
    assert [s["tunnels"] for s in udp_sessions(r, 90.0)] == [1]


def test_a_tunnel_ends_with_its_nat_session():
    r = make_router()
    established(r, C2, 7, peer=100)
    established(r, C1, 8)
    events(r)
    (session,) = [s for s in udp_sessions(r) if s["inside"] == f"{C1}:1701"]
    assert session["tunnels"] == 1
    assert r.close_session(session["id"], 5.0)
    assert [t["client"] for t in tunnels(r)] == [C2]
    assert len(_down(r)) == 1
    assert all(p[IP].dst != C1 for p in into(r, S1, data(8, 1), now=6.0))


def test_a_tunnel_reopened_with_its_old_tunnel_id_after_stopccn_lives_on():
    """A LAC may start again with the Tunnel ID it just stopped (xl2tpd's are random, but may repeat)."""
    r = make_router(timeouts={"l2tp": 600})
    established(r, C2, 8, peer=100)       # another LAC shares port 1701: the LNS's messages need the tunnel
    lac = established(r, C1, 7)
    lac.send(stopccn(LNS_TID, 7), now=2.0)
    lac.receive(zlb(7, 3, 4), now=2.0)
    again = Lac(r, C1, S1, 7)
    again.request(now=3.0)
    again.reply(LNS_TID + 1, now=3.0)
    again.connect(now=3.0)
    events(r)
    for now in (20.0, 40.0, 60.0):     # alive and busy, well inside timeouts.l2tp
        assert again.data_in(11, now=now) == data(7, 11)
        r.handle_timer(now)
    live = [t for t in tunnels(r, 60.0) if t["state"] != "stopping" and t["client"] == C1]
    assert [(t["tunnel_id"], t["peer_tunnel_id"], t["state"]) for t in live] == [(7, LNS_TID + 1, "established")]
    assert "tunnel_down" not in kinds(r)


def test_no_state_left_after_thousands_of_tunnels():
    r = make_router()
    for i in range(2000):
        now = 1.0 + i
        client, tid = (C1, C2)[i % 2], 1 + (i // 2) % 50
        if i % 10 == 0:     # the hosts keep their ARP entries fresh, as hosts do
            for port, ip in ((WAN, S1), (LAN, C1), (LAN, C2)):
                learn(r, port, ip, now)
        lac = Lac(r, client, S1, tid)
        lac.request(now)
        lac.reply(1000 + i, now)
        lac.connect(now)
        lac.send(stopccn(1000 + i, tid), now)
        lac.receive(zlb(lac.translated, 3, 4), now)
        r.handle_timer(now)
    r.handle_timer(2100.0)
    assert tunnels(r, 2100.0) == []
    assert [s["tunnels"] for s in udp_sessions(r, 2100.0)] in ([], [0, 0])
    assert r.counters["l2tp_tunnels_up"] == r.counters["l2tp_tunnels_down"] == 2000
    assert r.counters["l2tp_malformed"] == 0


# -- hidden AVPs, other versions, other ports ---------------------------------------------------------------------

def test_a_hidden_assigned_tunnel_id_is_left_alone_and_reported():
    r = make_router()
    lac = Lac(r, C1, S1, 7)
    message = sccrq(7, hide_tunnel_id=b"shared secret")
    assert lac.send(message) == message
    assert r.counters["l2tp_hidden_avp"] == 1
    assert "l2tp_hidden_avp" in kinds(r)
    assert lac.receive(sccrp(7, LNS_TID)) == sccrp(7, LNS_TID)     # untranslated, it works
    (tunnel,) = tunnels(r)
    assert (tunnel["tunnel_id"], tunnel["translated_tunnel_id"], tunnel["peer_tunnel_id"]) == (7, 7, LNS_TID)


def test_a_hidden_tunnel_id_is_learned_from_the_lns_while_another_lac_shares_port_1701():
    """The LNS's reply names the hidden ID in its header: it reaches the LAC that sent the hidden SCCRQ."""
    r = make_router()
    hidden, plain = Lac(r, C1, S1, 7), Lac(r, C2, S1, 5)
    plain.send(sccrq(5))
    hidden.send(sccrq(7, hide_tunnel_id=b"shared secret"), now=1.5)
    (reply,) = into(r, S1, sccrp(7, LNS_TID), now=2.0)
    assert reply[IP].dst == C1 and parse(udp_payload(reply)).tunnel_id == 7
    (data_in,) = into(r, S1, data(7, 3), now=3.0)
    assert data_in[IP].dst == C1
    assert {t["client"]: t["tunnel_id"] for t in tunnels(r)} == {C1: 7, C2: 5}


def test_a_hidden_host_name_is_not_shown():
    r = make_router()
    vector = bytes(range(16))
    message = control(0, 0, message_type(MT.SCCRQ) + avp(Avp.RANDOM_VECTOR, vector)
                      + hidden_avp(Avp.HOST_NAME, b"secret-lac", b"k", vector)
                      + avp(Avp.ASSIGNED_TUNNEL_ID, u16(7)))
    (pkt,) = out(r, C1, message, S1)
    assert udp_payload(pkt) == message
    (tunnel,) = tunnels(r)
    assert tunnel["host_name"] is None and tunnel["tunnel_id"] == 7


def _v3_control(connection_id: int) -> bytes:
    """L2TPv3 over UDP (RFC 3931 §4.1.2.1): T, L, S, version 3, Length, Control Connection ID, Ns, Nr."""
    return struct.pack("!HHIHH", 0xC803, 12, connection_id, 0, 0)


@pytest.mark.parametrize("version", [1, 3, 15])
def test_other_versions_cross_as_plain_udp(version):
    r = make_router()
    established(r, C2, 7, peer=100)
    message = with_u16(sccrq(7), 0, CONTROL & ~0xF | version)
    (pkt,) = out(r, C1, message, S1)
    assert udp_payload(pkt) == message and pkt[UDP].sport == 1701
    reply = with_u16(sccrp(7, LNS_TID), 0, CONTROL & ~0xF | version)
    r2 = make_router()
    (pkt,) = out(r2, C1, message, S1)
    (back,) = into(r2, S1, reply)
    assert udp_payload(back) == reply and back[IP].dst == C1
    assert r.counters["l2tp_other_version"] == 1 and r2.counters["l2tp_other_version"] == 2
    assert r.counters["l2tp_malformed"] == r2.counters["l2tp_malformed"] == 0
    assert [t["client"] for t in tunnels(r)] == [C2] and tunnels(r2) == []


def test_l2tpv3_data_over_udp_crosses_untouched():
    r = make_router()
    message = struct.pack("!HHI", 0x0003, 0, 0x01020304) + b"payload"   # RFC 3931 §4.1.2.1 data: T=0, Ver 3
    (pkt,) = out(r, C1, message, S1)
    assert udp_payload(pkt) == message
    assert udp_payload(out(r, C1, _v3_control(5), S1)[0]) == _v3_control(5)
    assert r.counters["l2tp_other_version"] == 2 and tunnels(r) == []


def test_udp_4500_is_never_l2tps():
    """L2TP/IPsec runs in ESP over UDP 4500: even bytes that look like L2TP there are not the L2TP helper's."""
    r = make_router()
    established(r, C2, 7, peer=100)
    before = {k: v for k, v in r.counters.items() if k.startswith("l2tp_")}
    message = sccrq(7)
    (pkt,) = out(r, C1, message, S1, sport=4500, dport=4500)
    assert udp_payload(pkt) == message
    assert {k: v for k, v in r.counters.items() if k.startswith("l2tp_")} == before
    assert [t["client"] for t in tunnels(r)] == [C2]
    assert all(s["vpn"] != "l2tp" for s in (i.to_dict() for i in r.session_infos(5.0))
               if s["inside"] == f"{C1}:4500")


# -- malformed messages -------------------------------------------------------------------------------------------

def _no_l(hdr: int) -> bytes:
    return struct.pack("!HHHHH", T_BIT | S_BIT | VERSION, hdr, 0, 1, 1) + message_type(MT.HELLO)


def _no_s(hdr: int) -> bytes:
    body = struct.pack("!HH", hdr, 0) + message_type(MT.HELLO)
    return struct.pack("!HH", T_BIT | L_BIT | VERSION, 4 + len(body)) + body


MALFORMED = {
    "length beyond the datagram": lambda hdr: control(hdr, 0, message_type(MT.HELLO), length=40),
    "length shorter than the header": lambda hdr: control(hdr, 0, message_type(MT.HELLO), length=10),
    "length under 8": lambda hdr: control(hdr, 0, message_type(MT.HELLO), length=6),
    "zero-length AVP": lambda hdr: control(hdr, 0, message_type(MT.HELLO) + avp(Avp.HOST_NAME, length=0)),
    "AVP length under 6": lambda hdr: control(hdr, 0, message_type(MT.HELLO) + avp(Avp.HOST_NAME, b"ab", length=5)),
    "truncated AVP header": lambda hdr: control(hdr, 0, message_type(MT.HELLO) + b"\x80\x0a\x00"),
    "AVP overrunning the message": lambda hdr: control(hdr, 0, message_type(MT.HELLO)
                                                       + avp(Avp.HOST_NAME, b"abcd", length=30)),
    "AVP overrunning the Length, inside the datagram": lambda hdr: control(
        hdr, 0, message_type(MT.HELLO) + avp(Avp.HOST_NAME, b"abcd"), length=12 + 8 + 6),
    "no Message Type AVP first": lambda hdr: control(hdr, 0, avp(Avp.HOST_NAME, b"x") + message_type(MT.HELLO)),
    "Message Type AVP of the wrong length": lambda hdr: control(hdr, 0, avp(Avp.MESSAGE_TYPE, b"\x00\x06\x00")),
    "control without L": _no_l,
    "control without S": _no_s,
    "data Length beyond the datagram": lambda hdr: with_u16(data(hdr, 1), 2, 200),
    "data offset beyond the message": lambda hdr: data(hdr, 1, length=False, offset=b"")[:6] + u16(500) + b"xy",
    "4-byte datagram": lambda hdr: u16(CONTROL) + u16(4),
}


@pytest.mark.parametrize("outbound", [True, False], ids=["LAC to LNS", "LNS to LAC"])
@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_messages_cross_unmodified_and_are_counted(name, outbound):
    r = make_router()
    lac = established(r, C1, 7)
    events(r)
    message = MALFORMED[name](LNS_TID if outbound else 7)
    assert (lac.send(message) if outbound else lac.receive(message)) == message
    assert r.counters["l2tp_malformed"] == 1
    (report,) = [d for kind, d in events(r) if kind == "l2tp_malformed"]
    assert report["summary"] and report["suppressed"] == 0
    assert [t["state"] for t in tunnels(r)] == ["established"]     # the tunnel carries on
    assert lac.data_in(11) == data(7, 11)


def test_a_flood_of_malformed_messages_is_counted_but_reported_at_a_limited_rate():
    r = make_router()
    lac = established(r, C1, 7)
    events(r)
    junk = MALFORMED["zero-length AVP"](LNS_TID)
    for _ in range(200):
        lac.send(junk, now=3.0)
    reports = [d for kind, d in events(r) if kind == "l2tp_malformed"]
    assert r.counters["l2tp_malformed"] == 200 and 1 <= len(reports) <= 20
    lac.send(junk, now=4.0)                       # a second later: reported again, with what was held back
    (later,) = [d for kind, d in events(r) if kind == "l2tp_malformed"]
    assert later["suppressed"] == 200 - len(reports)


_POOL = [sccrq(7), sccrp(7, LNS_TID), scccn(LNS_TID), stopccn(LNS_TID, 7), hello(7), icrq(LNS_TID, 11),
         icrp(7, 11, 21), iccn(LNS_TID, 21), ocrq(7, 31), ocrp(LNS_TID, 31, 41), occn(LNS_TID, 31),
         cdn(LNS_TID, 21, 11), wen(LNS_TID, 21), sli(LNS_TID, 21), zlb(7), data(7, 11),
         data(LNS_TID, 21, sequence=True, offset=b"\0\0", length=False), sccrq(7, hide_tunnel_id=b"k")]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["preserve", "translate"]),
       st.lists(st.tuples(st.sampled_from(_POOL), st.integers(0, 200), st.integers(0, 255), st.integers(0, 200),
                          st.booleans(), st.sampled_from([C1, C2])), min_size=1, max_size=10))
def test_no_l2tp_message_raises(mode, sends):
    """Messages mutated and cut anywhere, both directions, two LACs with one Tunnel ID: nothing raises."""
    r = make_router(**(TRANSLATE if mode == "translate" else {}))
    lacs = {C1: Lac(r, C1, S1, 7), C2: Lac(r, C2, S1, 7)}
    for lac in lacs.values():
        lac.request()
    for message, at, value, cut, outbound, client in sends:
        mutated = bytearray(message)
        mutated[at % len(mutated)] = value
        mutated = bytes(mutated[:max(cut, 1)])
        if outbound:
            out(r, client, mutated, S1)
        else:
            into(r, S1, mutated, dport=lacs[client].outside_port)
    r.handle_timer(10_000.0)
    assert tunnels(r, 10_000.0) == []


# -- the switch ---------------------------------------------------------------------------------------------------

def test_switch_off_refuses_new_tunnels_both_ways_and_tears_down_live_ones_then_on_again():
    forward = [{"proto": "udp", "port": 1702, "to": f"{C3}:1701"}]      # an LNS on the LAN
    r = make_router(forward=forward)
    lac = established(r, C1, 7)
    lac.call(11, 21)
    events(r)
    r.set_passthrough("l2tp", False, 3.0)
    assert tunnels(r, 3.0) == [] and udp_sessions(r, 3.0) == []
    assert [d["client"] for kind, d in events(r) if kind == "tunnel_down"] == [C1]
    assert into(r, S1, data(7, 11), now=3.5) == []
    before = r.counters["drop_passthrough_off"]
    assert out(r, C2, sccrq(9), S1, now=4.0) == []                              # a LAC on the LAN
    assert into(r, S2, sccrq(5), dport=1702, now=4.0) == []                     # a LAC out there, to our LNS
    assert r.counters["drop_passthrough_off"] == before + 2
    assert tunnels(r, 4.0) == []
    r.set_passthrough("l2tp", True, 5.0)
    again = Lac(r, C2, S1, 9)
    assert again.request(now=5.0) == sccrq(9)
    assert again.reply(LNS_TID, now=5.0) == sccrp(9, LNS_TID)
    assert again.connect(now=5.0) == scccn(LNS_TID)
    (pkt,) = into(r, S2, sccrq(5), dport=1702, now=5.5)
    assert pkt[IP].dst == C3 and udp_payload(pkt) == sccrq(5)
    assert sorted((t["client"], t["lns"]) for t in tunnels(r, 6.0)) == [(C2, S1), (S2, C3)]


# -- ctl sessions --json ------------------------------------------------------------------------------------------

def test_sessions_json_shows_each_tunnel_as_it_comes_up():
    r = make_router()
    established(r, C2, 7, peer=100)
    lac = Lac(r, C1, S1, 7, host_name="lac-one")
    lac.request(now=1.0)
    (tunnel,) = [t for t in tunnels(r) if t["client"] == C1]
    t = lac.translated
    assert {k: tunnel[k] for k in ("proto", "vpn", "inside", "outside", "client", "lns", "tunnel_id",
                                   "translated_tunnel_id", "peer_tunnel_id", "sessions", "host_name", "state")} == {
        "proto": "l2tp", "vpn": "l2tp", "inside": f"{C1}:7", "outside": f"{WAN_IP}:{t}",
        "client": C1, "lns": S1, "tunnel_id": 7, "translated_tunnel_id": t, "peer_tunnel_id": None,
        "sessions": [], "host_name": "lac-one", "state": "requested"}
    lac.reply(LNS_TID)
    (tunnel,) = [t for t in tunnels(r) if t["client"] == C1]
    assert tunnel["state"] == "replied" and tunnel["peer_tunnel_id"] == LNS_TID
    assert tunnel["remote"] == f"{S1}:{LNS_TID}"
    lac.connect()
    lac.call(11, 21)
    lac.data_in(11)
    lac.data_out(21)
    (tunnel,) = [t for t in tunnels(r) if t["client"] == C1]
    assert tunnel["state"] == "established"
    assert tunnel["sessions"] == [{"session_id": 11, "peer_session_id": 21, "state": "established"}]
    # out: SCCRQ, SCCCN, ICRQ, ICCN, data; in: SCCRP, ICRP, data
    assert (tunnel["packets_out"], tunnel["packets_in"]) == (5, 3)
    assert tunnel["bytes_out"] > 0 and tunnel["bytes_in"] > 0
    by_inside = {s["inside"]: s for s in udp_sessions(r)}
    assert by_inside[f"{C1}:1701"]["tunnels"] == by_inside[f"{C2}:1701"]["tunnels"] == 1
    assert by_inside[f"{C1}:1701"]["outside"] == f"{WAN_IP}:1701"
    assert tunnel["id"] not in {s["id"] for s in udp_sessions(r)}


def test_tunnel_up_event_names_the_tunnel():
    r = make_router()
    established(r, C2, 7, peer=100)
    events(r)
    lac = established(r, C1, 7)
    (up,) = [d for kind, d in events(r) if kind == "tunnel_up"]
    (tunnel,) = [t for t in tunnels(r) if t["client"] == C1]
    assert up == {"id": tunnel["id"], "client": C1, "lns": S1, "tunnel_id": 7,
                  "translated_tunnel_id": lac.translated, "peer_tunnel_id": LNS_TID}
    assert r.counters["l2tp_tunnels_up"] == 2


def test_an_lns_on_the_lan_behind_a_port_forward():
    """The same rule for an inside LNS: its Assigned Tunnel ID in SCCRP is its own announcement."""
    r = make_router(forward=[{"proto": "udp", "port": 1701, "to": f"{C3}:1701"}])
    (pkt,) = into(r, S1, sccrq(5))
    assert pkt[IP].dst == C3 and udp_payload(pkt) == sccrq(5)
    (pkt,) = out(r, C3, sccrp(5, 9), S1)
    assert udp_payload(pkt) == sccrp(5, 9) and pkt[UDP].sport == 1701
    (pkt,) = into(r, S1, scccn(9))
    assert udp_payload(pkt) == scccn(9)
    (tunnel,) = tunnels(r)
    assert (tunnel["client"], tunnel["lns"], tunnel["state"]) == (S1, C3, "established")
