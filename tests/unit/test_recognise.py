"""OpenVPN and WireGuard recognised without a helper (issue 20): by port and first bytes, once, when the session
opens; frames of an established flow are not looked at again.

The OpenVPN datagrams below are real: the first packet each client of OpenVPN 2.6.14 sent to a UDP or TCP socket
(plain TLS, --tls-auth, --tls-crypt, --tls-crypt-v2).  The WireGuard messages are scapy's (its contrib layer, made
from the whitepaper independently of ``router.recognise``).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
from scapy.contrib.wireguard import Wireguard, WireguardInitiation, WireguardResponse, WireguardTransport
from scapy.layers.inet import IP, TCP, UDP
from scapy.packet import Raw

from router.control import schema
from router.control.server import ControlServer
from router.packet.frame import IpProto
from router.recognise import (BY_PORT, RECOGNISERS, Recogniser, by_port, descriptions, openvpn, openvpn_tcp,
                              wireguard)
from tests.unit.frames import C1, C2, LAN, S1, S2, WAN, WAN_IP, drain, from_lan, from_wan, make_router, step, wire

ROOT = Path(__file__).resolve().parents[2]

OPENVPN_UDP = bytes.fromhex("38ea4ff2108067705b0000000000")
"""P_CONTROL_HARD_RESET_CLIENT_V2, key_id 0: opcode/key_id, session_id, no acks, packet-id 0 (14 bytes)."""
OPENVPN_TCP = bytes.fromhex("000e38842679973bd403f80000000000")
"""The same on TCP, after its 16-bit length (14)."""
OPENVPN_TLS_AUTH = bytes.fromhex("38a8e9815a8c189ab7b4383e699b32937fc69960a3a25bc31ef1f53384000000016b175a9d0000000000")
OPENVPN_TLS_CRYPT = bytes.fromhex("38b643bbb80c84db04000000016b175a9dc1cb450a64a3de478cdc495d80a63b94640286676978c1840d"
                                  "9626672b0ef75dd2540a8ffc")
OPENVPN_TLS_CRYPT_V2 = bytes.fromhex(
    "505c22dd7a14a341f70f0000016b175aa3e89d05e4e5f12cbb73e7af48135211e132736b446ec3d13bc3d35eb4c51874"
    "a8ecb9a6b8900f722299d314902f5b16be097070afb83f3da96d565454f89517475f15655b83d029de62c03924660f387928"
    "e8c595bb3a7374d1e9ae220c0b270b99ffb1f423e620cf3e510e06f87174d2fbf1ba785a55a82c6175c0ff853acf8e95606f"
    "101ecd6148de0548c27c1d184b6e3f017ad2bc5c3c10d157386398abf78eb798804982de4194acf5e1fdaf5ca0d626df6a4d"
    "d9343b2f6c0f3986f79146d2ef55799a0ff82d5525f51602016f64fc2921066f1e74dab8c6418701b35c4d378b0ce76f6c26"
    "87b3bce8151c4aa5bcb2c933f9408e1929ee81b1b8572463dee82f93006da8670eac7490ebc00d306fa0d6e0e8acdcde310d"
    "009a1d27017cc93e69b853b1d0be48f44c11f61dd3de13025cc0458f774b996e18e8b87b12927eedd6166e973753ec2c0445"
    "55ef02012b")
"""P_CONTROL_HARD_RESET_CLIENT_V3 (opcode 10): tls-crypt-v2, the client's wrapped key at the end."""
WG_INITIATION = bytes(Wireguard() / WireguardInitiation(sender_index=0x11223344, unencrypted_ephemeral=os.urandom(32),
                                                        encrypted_static=os.urandom(48),
                                                        encrypted_timestamp=os.urandom(28), mac1=os.urandom(16)))
WG_KEEPALIVE = bytes(Wireguard() / WireguardTransport(receiver_index=7, counter=3,
                                                      encrypted_encapsulated_packet=bytes(16)))
WG_DATA = bytes(Wireguard() / WireguardTransport(receiver_index=7, counter=4,
                                                 encrypted_encapsulated_packet=os.urandom(16 * 6 + 16)))
WG_RESPONSE = bytes(Wireguard() / WireguardResponse(sender_index=1, receiver_index=2))


# -- the predicates: (bytes, expected) -----------------------------------------------------------------------

@pytest.mark.parametrize("payload, expected", [
    (WG_INITIATION, True),
    (WG_INITIATION[:-1], False),                                  # 148 bytes exactly (§5.4.2)
    (WG_INITIATION + b"\0", False),
    (b"\x01\x00\x00\x01" + WG_INITIATION[4:], False),            # the reserved bytes are zero
    (WG_KEEPALIVE, True),                                         # type 4, the tag alone (§5.4.6)
    (WG_DATA, True),
    (WG_DATA[:-1], False),                                        # padded to a multiple of 16
    (WG_KEEPALIVE[:-16], False),                                  # shorter than a tag
    (WG_RESPONSE, False),                                         # a responder's, never a new flow's first
    (b"\x01", False), (b"", False),
    (OPENVPN_UDP, False),
])
def test_wireguard(payload, expected):
    assert len(WG_INITIATION) == 148 and WG_INITIATION[:4] == b"\x01\x00\x00\x00"
    assert wireguard(payload) is expected


@pytest.mark.parametrize("payload, expected", [
    (OPENVPN_UDP, True), (OPENVPN_TLS_AUTH, True), (OPENVPN_TLS_CRYPT, True), (OPENVPN_TLS_CRYPT_V2, True),
    (bytes([7 << 3 | 5]) + OPENVPN_UDP[1:], True),                # any key_id
    (OPENVPN_UDP[:-1], False),                                    # shorter than any hard reset
    (OPENVPN_UDP + bytes(1267), False),                           # longer than any (1280 at most)
    (bytes([4 << 3]) + OPENVPN_UDP[1:], False),                   # P_CONTROL_V1
    (bytes([9 << 3]) + OPENVPN_UDP[1:], False),                   # P_DATA_V2
    (bytes([8 << 3]) + OPENVPN_UDP[1:], False),                   # the server's hard reset
    (bytes([1 << 3]) + OPENVPN_UDP[1:], False),                   # V1 (key-method 1): gone from OpenVPN
    (OPENVPN_TCP, False), (WG_INITIATION, False), (b"", False),
])
def test_openvpn(payload, expected):
    assert openvpn(payload) is expected


@pytest.mark.parametrize("payload, expected", [
    (OPENVPN_TCP, True),
    (len(OPENVPN_TLS_CRYPT_V2).to_bytes(2, "big") + OPENVPN_TLS_CRYPT_V2[:40], True),   # the rest comes later
    (b"\x00\x0d" + OPENVPN_UDP, False),                           # a length too short for a hard reset
    (b"GET / HTTP/1.1\r\n", False),                                # "T" is opcode 10, but "GE" is 18245 long
    (OPENVPN_UDP, False),                                         # no length
    (OPENVPN_TCP[:-1], False), (b"\x16\x03\x01\x02\x00\x01", False), (b"", False),
])
def test_openvpn_over_tcp(payload, expected):
    assert openvpn_tcp(payload) is expected


def test_the_registry_describes_each_once_by_port():
    assert descriptions(RECOGNISERS) == [
        {"name": "openvpn", "title": "OpenVPN", "proto": "udp", "port": 1194},
        {"name": "openvpn-tcp", "title": "OpenVPN (TCP)", "proto": "tcp", "port": 1194},
        {"name": "wireguard", "title": "WireGuard", "proto": "udp", "port": 51820}]
    assert [list(d) for d in descriptions(RECOGNISERS)] == [list(schema.RECOGNISER_FIELDS)] * 3
    assert sorted(BY_PORT) == [(6, 1194), (17, 1194), (17, 51820)]
    with pytest.raises(ValueError, match="both recognise udp port 1194"):
        by_port(RECOGNISERS + (Recogniser("other", "Other", IpProto.UDP, 1194, bool),))


# -- through the router -------------------------------------------------------------------------------------

def udp_out(r, payload: bytes, dport: int, src=C1, sport=40000, dst=S1, now=1.0):
    return step(r, LAN, from_lan(src, dst, UDP(sport=sport, dport=dport) / Raw(payload)), now)


def session_of(r, client=C1, now=2.0) -> dict:
    (session,) = [i.to_dict() for i in r.session_infos(now) if i.inside.startswith(client + ":")]
    return session


@pytest.mark.parametrize("payload, dport, name", [
    (WG_INITIATION, 51820, "wireguard"), (WG_KEEPALIVE, 51820, "wireguard"),
    (OPENVPN_UDP, 1194, "openvpn"), (OPENVPN_TLS_CRYPT_V2, 1194, "openvpn")])
def test_a_udp_vpn_is_recognised_by_its_first_bytes(payload, dport, name):
    r = make_router()
    (out,) = udp_out(r, payload, dport)[WAN]
    assert out[IP].src == WAN_IP and bytes(out[UDP].payload) == payload          # forwarded as any datagram
    session = session_of(r)
    assert (session["recognised"], session["recognised_by"]) == (name, "first bytes")
    assert "vpn" not in session and session["proto"] == "udp"                   # plain UDP, no helper
    (back,) = step(r, WAN, from_wan(S1, UDP(sport=dport, dport=out[UDP].sport) / Raw(b"answer")), 2.0)[LAN]
    assert back[IP].dst == C1 and session_of(r, now=3.0)["recognised"] == name


@pytest.mark.parametrize("payload, dport", [
    (b"\x12\x34\x01\x00\x00\x01" + bytes(10), 51820),      # a DNS query to WireGuard's port
    (OPENVPN_UDP, 51820), (WG_INITIATION, 1194),            # the other one's bytes
    (WG_INITIATION[:-4], 51820), (b"", 1194),
    (WG_INITIATION, 51821), (OPENVPN_UDP, 1195),            # the right bytes to another port
])
def test_a_udp_flow_that_does_not_look_like_it_is_plain_udp(payload, dport):
    r = make_router()
    assert len(udp_out(r, payload, dport)[WAN]) == 1
    session = session_of(r)
    assert session["recognised"] is None and session["recognised_by"] is None


def test_tcp_is_recognised_by_port_from_its_syn_or_by_the_bytes_a_syn_carries():
    r = make_router()
    step(r, LAN, from_lan(C1, S1, TCP(sport=40000, dport=1194, flags="S")), 1.0)
    assert (session_of(r)["recognised"], session_of(r)["recognised_by"]) == ("openvpn-tcp", "port")
    step(r, LAN, from_lan(C2, S1, TCP(sport=40000, dport=1194, flags="S") / Raw(OPENVPN_TCP)), 1.0)  # TCP Fast Open
    assert (session_of(r, C2)["recognised"], session_of(r, C2)["recognised_by"]) == ("openvpn-tcp", "first bytes")
    step(r, LAN, from_lan(C1, S2, TCP(sport=40001, dport=1194, flags="S") / Raw(b"GET / HTTP/1.1\r\n")), 1.0)
    other = [i.to_dict() for i in r.session_infos(2.0) if i.remote.startswith(S2)]
    assert other[0]["recognised"] is None
    step(r, LAN, from_lan(C1, S2, TCP(sport=40002, dport=51820, flags="S")), 1.0)    # WireGuard has no TCP
    assert [i.recognised for i in r.session_infos(2.0) if i.remote == f"{S2}:51820"] == [None]


class Counting:
    """A recogniser that counts what it is asked."""

    def __init__(self, proto=IpProto.UDP, port=51820):
        self.calls = 0
        self.recogniser = Recogniser("counted", "Counted", proto, port, self.matches)

    def matches(self, payload: bytes) -> bool:
        self.calls += 1
        return True


def test_only_the_frame_that_opens_the_session_is_looked_at():
    r = make_router()
    counting = Counting()
    r.recognisers = by_port([counting.recogniser])
    outside = udp_out(r, b"first", 51820)[WAN][0][UDP].sport
    for n in range(5):
        assert len(udp_out(r, b"later", 51820, now=1.1 + n)[WAN]) == 1
        assert len(step(r, WAN, from_wan(S1, UDP(sport=51820, dport=outside) / Raw(b"in")), 1.2 + n)[LAN]) == 1
    assert counting.calls == 1 and session_of(r, now=9.0)["recognised"] == "counted"
    assert session_of(r, now=9.0)["packets_out"] == 6


def bytecodes_per_frame(r, port: int, frame: bytes, frames: int = 50) -> float:
    """Python bytecodes ``receive_frame`` runs for one frame, after the flow is established (warmed up)."""
    for _ in range(5):
        r.receive_frame(port, bytearray(frame), 1.5)
    count = 0

    def tracer(frame_, event, arg):
        nonlocal count
        frame_.f_trace_opcodes = True
        count += event == "opcode"
        return tracer
    sys.settrace(tracer)
    try:
        for _ in range(frames):
            r.receive_frame(port, bytearray(frame), 1.5)
    finally:
        sys.settrace(None)
    drain(r)
    return count / frames


def test_an_established_frame_runs_the_same_code_recognised_or_not():
    """What the instruction counts of tests/perf/instructions.py measure, without the interpreter's memory layout
    (which moves them by hundreds when any module changes): recognition adds nothing per frame."""
    def established(recognisers, dport: int) -> tuple[float, float]:
        r = make_router()
        r.recognisers = recognisers
        out = wire(from_lan(C1, S1, UDP(sport=40000, dport=dport) / Raw(WG_INITIATION)))
        outside = step(r, LAN, out)[WAN][0][UDP].sport
        answer = wire(from_wan(S1, UDP(sport=dport, dport=outside) / Raw(WG_KEEPALIVE)))
        return bytecodes_per_frame(r, LAN, out), bytecodes_per_frame(r, WAN, answer)
    recognised = established(BY_PORT, 51820)
    assert recognised == established(BY_PORT, 51821) == established({}, 51820)


def test_a_helpers_flow_is_not_recognised():
    """A helper takes its flows first; a recogniser on its port is never asked."""
    r = make_router()
    counting = Counting(IpProto.TCP, 1723)
    r.recognisers = {**BY_PORT, **by_port([counting.recogniser])}
    step(r, LAN, from_lan(C1, S1, TCP(sport=40000, dport=1723, flags="S")), 1.0)
    session = session_of(r)
    assert session["vpn"] == "pptp" and session["recognised"] is None and counting.calls == 0


def test_a_router_with_no_recognisers_names_nothing():
    r = make_router()
    r.recognisers = {}
    udp_out(r, WG_INITIATION, 51820)
    assert session_of(r)["recognised"] is None


def test_every_session_and_flow_dict_has_the_fields():
    """NAT sessions and helpers' flows alike (``schema.SESSION_RECOGNISED``), null when not recognised."""
    from tests.unit.pptp_frames import Control, call_up
    r = make_router()
    call_up(Control(r, C2, S2), 1, 100)
    udp_out(r, WG_INITIATION, 51820)
    infos = [i.to_dict() for i in r.session_infos(2.0)]
    assert {i["proto"] for i in infos} == {"udp", "tcp", "gre"}
    for info in infos:
        assert set(schema.SESSION_RECOGNISED) <= set(info) and set(schema.SESSION_FIELDS) <= set(info)
        assert info["recognised_by"] in (None, *schema.RECOGNISED_BY)


def test_version_lists_the_routers_recognisers(tmp_path):
    r = make_router()
    server = ControlServer(r, lambda: 5.0, str(tmp_path / "ctl.sock"))
    assert server._version([], None)["recognisers"] == descriptions(RECOGNISERS)
    r.recognisers = {}
    assert server._version([], None)["recognisers"] == []


def test_no_module_but_the_registry_and_the_lab_names_a_recognised_protocol():
    """As for helpers (test_registry): the data plane, the control socket, ``ctl`` and the dashboard learn them
    from ``router/recognise.py``."""
    words = re.compile("|".join(re.escape(r.name.split("-")[0]) for r in RECOGNISERS), re.IGNORECASE)
    naming = sorted(path.relative_to(ROOT).as_posix() for folder in ("router", "tui")
                    for path in (ROOT / folder).rglob("*.py") if words.search(path.read_text()))
    assert [name for name in naming if not name.startswith("router/lab/")] == ["router/recognise.py"]
