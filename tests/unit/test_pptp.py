"""PPTP passthrough (RFC 2637): Call ID translation, GRE demultiplexing, framing, malformed input, switch."""

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import GRE_PPTP
from scapy.utils import rdpcap

from tests.unit.frames import C1, C2, C3, LAN, S1, S2, WAN, WAN_IP, from_lan, make_router, step
from tests.unit.pptp_frames import (CCRQ, CDN, ECHO_RP, ECHO_RQ, ICCN, ICRP, ICRQ, OCRP, OCRQ, SCCRP, SCCRQ, SLI,
                                    STOP_CCRP, STOP_CCRQ, WEN, Control, call_up, gre_in, gre_out, payload_of)

DATA = __import__("pathlib").Path(__file__).parents[1] / "data"


def calls(r, now: float = 5.0) -> list[dict]:
    """The PPTP calls as ``ctl sessions --json`` shows them."""
    return [i.to_dict() for i in r.session_infos(now) if i.vpn == "pptp" and i.proto == "gre"]


def control_sessions(r, now: float = 5.0) -> list[dict]:
    return [i.to_dict() for i in r.session_infos(now) if i.vpn == "pptp" and i.proto == "tcp"]


def test_three_clients_with_the_same_call_id_to_one_server():
    r = make_router()
    controls = [Control(r, c, S1, inside_port=40000 + i) for i, c in enumerate((C1, C2, C3))]
    # interleaved: all three request calls, then the server answers in another order
    sent = [ctl.out_message(OCRQ(call_id=0, call_serial_number=i)) for i, ctl in enumerate(controls)]
    translated = [s.call_id for s in sent]
    assert len(set(translated)) == 3
    for ctl, server_id, t in reversed(list(zip(controls, (128, 256, 384), translated))):
        reply = ctl.in_message(OCRP(call_id=server_id, peer_call_id=t, result_code=1))
        assert reply.peer_call_id == 0
    for client, t in zip((C1, C2, C3), translated):
        (pkt,) = gre_in(r, S1, t)
        assert pkt[IP].dst == client and pkt[GRE_PPTP].call_id == 0
    for client, server_id in zip((C1, C2, C3), (128, 256, 384)):
        (pkt,) = gre_out(r, client, S1, server_id)
        assert pkt[IP].src == WAN_IP and pkt[GRE_PPTP].call_id == server_id


def test_several_calls_on_one_control_connection():
    r = make_router()
    ctl = Control(r, C1, S1)
    t1, t2 = call_up(ctl, 1, 100), call_up(ctl, 2, 200)
    assert gre_in(r, S1, t1)[0][GRE_PPTP].call_id == 1
    assert gre_in(r, S1, t2)[0][GRE_PPTP].call_id == 2
    assert len(calls(r)) == 2


def test_different_servers_may_reuse_translated_ids():
    r = make_router()
    a = call_up(Control(r, C1, S1), 7, 1)
    b = call_up(Control(r, C2, S2), 7, 1)
    assert a == b == 7   # unique per (router address, server), so both keep their own
    assert gre_in(r, S1, 7)[0][IP].dst == C1 and gre_in(r, S2, 7)[0][IP].dst == C2


def test_gre_from_other_address_or_unknown_call_is_dropped():
    r = make_router()
    t = call_up(Control(r, C1, S1), 0, 128)
    assert gre_in(r, S2, t) == []
    assert gre_in(r, S1, t + 1) == []
    assert gre_out(r, C2, S1, 128) == []
    assert r.counters["drop_gre_no_call"] == 3


# Each message type, both directions: which Call ID fields the router changes (RFC 2637 §2).
TRANSLATED = 0x4242


@pytest.mark.parametrize("message, field, outbound, expect", [
    (SCCRQ(), None, True, None), (SCCRP(), None, False, None),
    (STOP_CCRQ(), None, True, None), (STOP_CCRP(), None, False, None), (ECHO_RQ(identifier=5), None, True, None),
    (ECHO_RP(identifier=5), None, False, None),
    (OCRQ(call_id=9), "call_id", True, "new"),     # a new call: a new translation, since 9 is taken
    (OCRP(call_id=77, peer_call_id=TRANSLATED), "peer_call_id", False, "restored"),
    (OCRP(call_id=77, peer_call_id=TRANSLATED), "call_id", False, "kept"),
    (ICRP(call_id=9, peer_call_id=77), "call_id", True, "new"),
    (ICRP(call_id=9, peer_call_id=77), "peer_call_id", True, "kept"),
    (ICRQ(call_id=77), "call_id", False, "kept"),
    (ICCN(peer_call_id=TRANSLATED), "peer_call_id", False, "restored"),
    (CCRQ(call_id=9), "call_id", True, "translated"),
    (CDN(call_id=77), "call_id", False, "kept"),
    (WEN(peer_call_id=TRANSLATED), "peer_call_id", False, "restored"),
    (SLI(peer_call_id=77), "peer_call_id", True, "kept"),
])
def test_message_table(message, field, outbound, expect):
    r = make_router()
    call_up(Control(r, C2, S1, inside_port=40001), 9, 1)   # Call ID 9 towards S1 is taken: C1's 9 must change
    ctl = Control(r, C1, S1)
    translated = ctl.out_message(OCRQ(call_id=9)).call_id   # the inside peer's call 9 <-> translated
    assert translated != 9
    ctl.in_message(OCRP(call_id=77, peer_call_id=translated, result_code=1))
    message = message.copy()
    for name in ("call_id", "peer_call_id"):   # TRANSLATED stands for the translation the router chose
        if getattr(message, name, None) == TRANSLATED:
            setattr(message, name, translated)
    seen = ctl.out_message(message) if outbound else ctl.in_message(message)
    assert bytes(seen)[:12] == bytes(message)[:12]
    if field is None:
        assert bytes(seen) == bytes(message)
        return
    if expect == "new":
        new = getattr(seen, field)
        assert new != 9 and new in [c["translated_call_id"] for c in calls(r) if c["client"] == C1]
        return
    value = {"translated": translated, "restored": 9, "kept": getattr(message, field)}[expect]
    assert getattr(seen, field) == value


def test_message_split_across_segments_and_several_in_one():
    r = make_router()
    ctl = Control(r, C1, S1)
    data = bytes(SCCRQ()) + bytes(OCRQ(call_id=3))
    first = ctl.send_out(data[:170])     # SCCRQ and 14 bytes of the OCRQ: its Call ID is in the next segment
    second = ctl.send_out(data[170:])
    whole = payload_of(first[0]) + payload_of(second[0])
    translated = OCRQ(whole[156:]).call_id
    assert whole[:156] == bytes(SCCRQ()) and [c["translated_call_id"] for c in calls(r)] == [translated]
    for cut in (5, 12, 100):   # header split, Call ID first in the next segment, body split
        r = make_router()
        ctl = Control(r, C1, S1)
        msg = bytes(OCRQ(call_id=4))
        a, b = ctl.send_out(msg[:cut]), ctl.send_out(msg[cut:])
        assert OCRQ(payload_of(a[0]) + payload_of(b[0])).call_id == 4 and len(calls(r)) == 1


def test_call_id_split_inside_the_field_is_reported_not_translated():
    r = make_router()
    ctl = Control(r, C1, S1)
    msg = bytes(OCRQ(call_id=0x0102))
    a, b = ctl.send_out(msg[:13]), ctl.send_out(msg[13:])
    assert payload_of(a[0]) + payload_of(b[0]) == msg
    assert r.counters["pptp_split_field"] == 1


def test_retransmission_is_rewritten_the_same_way():
    r = make_router()
    call_up(Control(r, C2, S1, inside_port=40001), 0, 128)   # Call ID 0 towards S1 is taken
    ctl = Control(r, C1, S1)
    msg = bytes(OCRQ(call_id=0, call_serial_number=2))
    seq = ctl.inside_seq
    (first,) = ctl.send_out(msg)
    (again,) = ctl.send_out(msg, seq=seq)
    assert payload_of(first) == payload_of(again) and OCRQ(payload_of(first)).call_id != 0
    # a retransmission that also brings new bytes: the old part replayed, the new part parsed
    extra = bytes(ECHO_RQ(identifier=1))
    (mixed,) = ctl.send_out(msg + extra, seq=seq, advance=False)
    assert payload_of(mixed) == payload_of(first) + extra
    assert len(calls(r)) == 2


def test_segment_beyond_a_gap_is_dropped_until_retransmitted():
    r = make_router()
    ctl = Control(r, C1, S1)
    msg = bytes(OCRQ(call_id=5))
    assert ctl.send_out(msg, seq=ctl.inside_seq + 100, advance=False) == []
    assert r.counters["drop_pptp_out_of_order"] == 1
    (ok,) = ctl.send_out(msg)
    assert OCRQ(payload_of(ok)).call_id == 5


def test_bad_cookie_is_forwarded_unmodified_and_parsing_stops():
    r = make_router()
    ctl = Control(r, C1, S1)
    bad = bytearray(bytes(OCRQ(call_id=5)))
    bad[4:8] = b"\xde\xad\xbe\xef"
    (pkt,) = ctl.send_out(bytes(bad))
    assert payload_of(pkt) == bytes(bad)
    assert r.counters["pptp_desync"] == 1
    (later,) = ctl.send_out(bytes(OCRQ(call_id=6)))
    assert OCRQ(payload_of(later)).call_id == 6 and not calls(r)
    assert any(getattr(e, "kind", None) == "pptp_desync" for e in iter(r.next_event, None))


@pytest.mark.parametrize("mutate", [
    lambda b: b[:8] + b"\x00\x63" + b[10:],                  # unknown control message type 99
    lambda b: b"\x00\x20" + b[2:32],                          # OCRQ with a wrong length (32)
])
def test_malformed_messages_are_skipped_by_their_length(mutate):
    r = make_router()
    ctl = Control(r, C1, S1)
    bad = mutate(bytes(OCRQ(call_id=5)))
    (pkt,) = ctl.send_out(bad)
    assert payload_of(pkt) == bad and r.counters["pptp_malformed"] == 1
    (good,) = ctl.send_out(bytes(OCRQ(call_id=5)))   # framing kept: the next message is translated
    assert len(calls(r)) == 1 and OCRQ(payload_of(good)).call_id == 5


def test_truncated_message_then_close_leaves_no_state():
    r = make_router()
    ctl = Control(r, C1, S1)
    ctl.send_out(bytes(OCRQ(call_id=5))[:40])
    ctl.close("R")
    assert not calls(r)


@pytest.mark.parametrize("ending", ["cdn", "ccrq_cdn", "stop", "rst", "fin"])
def test_calls_end(ending):
    r = make_router()
    ctl = Control(r, C1, S1)
    t = call_up(ctl, 0, 128)
    if ending == "cdn":
        ctl.in_message(CDN(call_id=128))
    elif ending == "ccrq_cdn":
        ctl.out_message(CCRQ(call_id=0))
        assert calls(r)[0]["call_state"] == "clearing"
        ctl.in_message(CDN(call_id=128))
    elif ending == "stop":
        ctl.out_message(STOP_CCRQ())
    elif ending == "rst":
        ctl.close("R")
    else:
        ctl.close("FA")
        ctl._in(flags="FA")
    assert gre_in(r, S1, t) == [] and gre_out(r, C1, S1, 128) == []
    assert not calls(r)
    kinds = [e.kind for e in iter(r.next_event, None) if hasattr(e, "kind")]
    assert kinds.count("call_up") == 1 and kinds.count("call_down") == 1


@pytest.mark.parametrize("outbound", [False, True])
def test_a_forged_rst_far_from_the_stream_ends_nothing(outbound):
    """RFC 5961 §3: a blind RST, its sequence number a guess, is dropped; one at the stream's place ends the calls."""
    r = make_router()
    ctl = Control(r, C1, S1)
    t = call_up(ctl, 0, 128)
    send, seq = (ctl._out, ctl.inside_seq) if outbound else (ctl._in, ctl.remote_seq)
    for guess in (seq + 70000, seq - 70000, seq ^ 0x80000000):
        assert send(flags="R", seq=guess & 0xFFFFFFFF) == {LAN: [], WAN: []}
    assert r.counters["drop_pptp_rst_out_of_window"] == 3
    assert [c["call_state"] for c in calls(r)] == ["established"] and gre_in(r, S1, t)
    send(flags="R", seq=seq + 10)            # within a window of it: honoured
    assert not calls(r)


def test_idle_gre_expires():
    r = make_router(timeouts={"gre": 60})
    t = call_up(Control(r, C1, S1), 0, 128)
    gre_in(r, S1, t, now=30.0)
    r.handle_timer(89.0)
    assert calls(r)
    r.handle_timer(91.0)
    assert not calls(r) and gre_in(r, S1, t, now=92.0) == []


def test_no_state_left_after_thousands_of_calls():
    r = make_router()
    ctl = Control(r, C1, S1)
    for i in range(2000):
        t = call_up(ctl, i % 3, 1000 + i)
        gre_in(r, S1, t)
        ctl.in_message(CDN(call_id=1000 + i))
    assert not calls(r) and [c["calls"] for c in control_sessions(r)] == [0]
    assert r.counters["pptp_calls_up"] == r.counters["pptp_calls_down"] == 2000


def test_inbound_call_through_a_port_forward():
    """A PPTP server on the LAN: the same rule translates the server's Call IDs."""
    r = make_router(forward=[{"proto": "tcp", "port": 1723, "to": f"{C2}:1723"}])
    ctl = Control(r, C2, S1, inside_port=33000, inside_is_client=False)
    request = ctl.in_message(OCRQ(call_id=55))         # remote client's Call ID 55, untouched
    assert request.call_id == 55
    reply = ctl.out_message(OCRP(call_id=0, peer_call_id=55, result_code=1))
    translated = reply.call_id
    (pkt,) = gre_in(r, S1, translated)
    assert pkt[IP].dst == C2 and pkt[GRE_PPTP].call_id == 0
    (out,) = gre_out(r, C2, S1, 55)
    assert out[IP].src == WAN_IP and out[GRE_PPTP].call_id == 55
    assert calls(r)[0]["client"] == S1


def test_incoming_call_from_the_server_side():
    """ICRQ from the remote PAC, ICRP from the inside PNS, ICCN from the PAC (RFC 2637 §2.9-2.11)."""
    r = make_router()
    ctl = Control(r, C1, S1)
    ctl.in_message(ICRQ(call_id=300))
    translated = ctl.out_message(ICRP(call_id=0, peer_call_id=300, result_code=1)).call_id
    assert ctl.in_message(ICCN(peer_call_id=translated)).peer_call_id == 0
    assert calls(r)[0]["call_state"] == "established"
    assert gre_in(r, S1, translated)[0][GRE_PPTP].call_id == 0
    assert gre_out(r, C1, S1, 300)[0][IP].src == WAN_IP


def test_switch_off_refuses_and_tears_down_then_on_again():
    r = make_router()
    ctl = Control(r, C1, S1)
    t = call_up(ctl, 0, 128)
    r.set_passthrough("pptp", False, 3.0)
    assert not calls(r) and not control_sessions(r)
    assert gre_in(r, S1, t) == []
    syn = from_lan(C2, S1, TCP(sport=40000, dport=1723, flags="S"))
    assert step(r, LAN, syn, 3.5)[WAN] == []        # a new control connection is refused
    assert r.counters["drop_passthrough_off"] >= 2
    r.set_passthrough("pptp", True, 4.0)
    t2 = call_up(Control(r, C2, S1, inside_port=41000), 0, 129)
    (pkt,) = gre_in(r, S1, t2, now=4.5)
    assert pkt[IP].dst == C2 and [c["client"] for c in calls(r)] == [C2]


def test_sessions_show_each_call():
    r = make_router()
    t = call_up(Control(r, C1, S1), 0, 128)
    gre_in(r, S1, t)
    gre_out(r, C1, S1, 128)
    (call,) = [i.to_dict() for i in r.session_infos(5.0) if i.proto == "gre"]
    assert call["vpn"] == "pptp" and call["client"] == C1 and call["server"] == S1
    assert call["call_id"] == 0 and call["translated_call_id"] == t and call["peer_call_id"] == 128
    assert call["state"] == "established" and call["packets_in"] == call["packets_out"] == 1
    assert call["bytes_in"] > 0 and call["bytes_out"] > 0


def test_real_pptp_linux_and_pptpd_messages_from_the_capture():
    """Control payloads captured from pptp-linux and pptpd, replayed from two LAN clients."""
    packets = [p for p in rdpcap(str(DATA / "pptp_fake_2cli.pcap")) if TCP in p and len(p[TCP].payload)]
    first_conn = packets[0][TCP].sport
    conn = [p for p in packets if first_conn in (p[TCP].sport, p[TCP].dport)]
    to_server = [bytes(p[TCP].payload) for p in conn if p[TCP].dport == 1723]
    to_client = [bytes(p[TCP].payload) for p in conn if p[TCP].sport == 1723]
    r = make_router()
    translated = []
    for client, port in ((C1, 40000), (C2, 40001)):
        ctl = Control(r, client, S1, inside_port=port)
        ctl.send_out(to_server[0])                       # SCCRQ
        ctl.send_in(to_client[0])                        # SCCRP
        (ocrq,) = ctl.send_out(to_server[1])             # OCRQ, the Call ID the capture's NAT chose
        t = OCRQ(payload_of(ocrq)).call_id
        translated.append(t)
        reply = bytearray(to_client[1])                  # OCRP, addressed to our translation
        reply[14:16] = t.to_bytes(2, "big")
        reply[12:14] = (128 * len(translated)).to_bytes(2, "big")
        (ocrp,) = ctl.send_in(bytes(reply))
        assert OCRP(payload_of(ocrp)).peer_call_id == OCRQ(to_server[1]).call_id
    assert translated[0] != translated[1]
    assert len(calls(r)) == 2


def test_call_id_at_an_odd_offset_keeps_the_tcp_checksum_right():
    """After an odd-length (malformed) message the next Call ID straddles two checksum words."""
    r = make_router()
    call_up(Control(r, C2, S1, inside_port=40001), 0, 128)   # 0 is taken: C1's 0 must change
    ctl = Control(r, C1, S1)
    odd = b"\x00\x11\x00\x01\x1a\x2b\x3c\x4d\x00\x63" + bytes(7)   # type 99, length 17
    (pkt,) = ctl.send_out(odd + bytes(OCRQ(call_id=0)))   # step() has scapy verify the TCP checksum
    assert OCRQ(payload_of(pkt)[17:]).call_id != 0 and r.counters["pptp_malformed"] == 1


def test_bogus_data_offset_does_not_derail_the_stream():
    r = make_router()
    ctl = Control(r, C1, S1)
    bogus = from_lan(C1, S1, TCP(sport=40000, dport=1723, flags="A", seq=ctl.inside_seq, dataofs=15) / b"xy")
    step(r, LAN, bogus)
    (good,) = ctl.send_out(bytes(OCRQ(call_id=5)))
    assert len(calls(r)) == 1 and OCRQ(payload_of(good)).call_id == 5


def test_a_flood_of_malformed_messages_is_counted_but_reported_at_a_limited_rate():
    r = make_router()
    ctl = Control(r, C1, S1)
    junk = b"\x00\x10\x00\x01\x1a\x2b\x3c\x4d\x00\x63" + bytes(6)   # unknown type 99, 16 bytes
    ctl.send_out(junk * 200)
    reports = [e for e in iter(r.next_event, None) if getattr(e, "kind", None) == "pptp_malformed"]
    assert r.counters["pptp_malformed"] == 200 and 1 <= len(reports) <= 20


_MESSAGES = [bytes(m) for m in (SCCRQ(), OCRQ(call_id=1), OCRP(call_id=2, peer_call_id=1, result_code=1),
                                 ICRQ(call_id=3), ICRP(call_id=4, peer_call_id=3), ICCN(peer_call_id=4),
                                 CCRQ(call_id=1), CDN(call_id=2), WEN(peer_call_id=1), SLI(peer_call_id=2),
                                 STOP_CCRQ())]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(_MESSAGES), st.integers(0, 300), st.integers(0, 255),
                          st.integers(1, 200), st.booleans()), min_size=1, max_size=8))
def test_no_control_stream_raises(chunks):
    """Messages, mutated and cut anywhere, in both directions, never raise out of the data plane."""
    r = make_router()
    ctl = Control(r, C1, S1)
    for message, at, value, cut, outbound in chunks:
        data = bytearray(message)
        data[at % len(data)] = value
        for piece in (bytes(data[:cut]), bytes(data[cut:])):
            if piece:
                (ctl.send_out if outbound else ctl.send_in)(piece)
    r.handle_timer(10_000.0)
    assert not calls(r)
