"""The valid conversations the fuzzer starts from: one per target, as (port, frame) in the order they are sent.

Each is short and real: the state it builds (a NAT session, a PPTP call, an
L2TP tunnel, an IPsec association) is what lets a mutated frame reach deep
into its protocol's parser.  ``test_fuzz.test_conversations_work_unmutated``
checks that each does what it is for.
"""

from __future__ import annotations

from functools import cache

from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP
from scapy.layers.l2 import ARP, Dot1Q, Ether, GRE_PPTP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw

from tests.unit import ipsec_frames as ike
from tests.unit import l2tp_frames as l2tp
from tests.unit import pptp_frames as pptp
from tests.unit.frames import (C1, C2, C3, FAR, LAN, LAN_IP, LAN_MAC, MACS, S1, S2, WAN, WAN_IP, WAN_MAC, from_lan,
                               from_wan, partial_frame, wire)

OTHER = "192.168.77.60"     # a LAN host the router has not resolved yet
PPP = b"\xff\x03\xc0\x21\x09\x01\x00\x08\x00\x00\x00\x0a"


def tcp_connection(client: str, server: str, cport: int, sport: int, messages, close: str = "F") -> list:
    """A TCP connection from a LAN client through the NAT: handshake, ``messages`` ((outbound, bytes) or
    ready (port, frame) pairs), then FIN both ways or a RST. The outside port is ``cport`` (preserved)."""
    seq = {LAN: 1000, WAN: 5000}

    def segment(port, flags, data=b""):
        if port == LAN:
            l4 = TCP(sport=cport, dport=sport, flags=flags, seq=seq[LAN], ack=seq[WAN])
            pkt = from_lan(client, server, l4 / Raw(data) if data else l4)
        else:
            l4 = TCP(sport=sport, dport=cport, flags=flags, seq=seq[WAN], ack=seq[LAN])
            pkt = from_wan(server, l4 / Raw(data) if data else l4)
        seq[port] += len(data) + (1 if set(flags) & set("SF") else 0)
        return port, wire(pkt)

    steps = [segment(LAN, "S"), segment(WAN, "SA"), segment(LAN, "A")]
    for message in messages:
        if isinstance(message[1], (bytes, bytearray)) and isinstance(message[0], bool):
            outbound, data = message
            steps.append(segment(LAN if outbound else WAN, "PA", data))
        else:
            steps.append(message)
    if close == "R":
        return steps + [segment(LAN, "R")]
    return steps + [segment(LAN, "FA"), segment(WAN, "FA"), segment(LAN, "A")]


def _gre(port: int, inside: str, remote: str, call_id: int) -> tuple:
    l4 = GRE_PPTP(key_present=1, seqnum_present=1, call_id=call_id, payload_len=len(PPP), sequence_number=1)
    pkt = from_lan(inside, remote, l4 / Raw(PPP)) if port == LAN else from_wan(remote, l4 / Raw(PPP))
    return port, wire(pkt)


def _udp(port: int, host: str, remote: str, hport: int, rport: int, data: bytes, **ip) -> tuple:
    if port == LAN:
        return LAN, wire(from_lan(host, remote, UDP(sport=hport, dport=rport) / Raw(data), **ip))
    return WAN, wire(from_wan(remote, UDP(sport=rport, dport=hport) / Raw(data), **ip))


def _arp(port: int, ip: str, mac: str, op: int = 1, target: str | None = None, dst: str = "ff:ff:ff:ff:ff:ff"):
    target = target or (LAN_IP if port == LAN else WAN_IP)
    return port, wire(Ether(src=mac, dst=dst) / ARP(op=op, hwsrc=mac, psrc=ip, pdst=target))


def ethernet() -> list:
    return [
        _udp(LAN, C1, S1, 5000, 53, b"query"),
        (LAN, wire(Ether(src=MACS[C1], dst=LAN_MAC) / Dot1Q(vlan=7) / IP(src=C1, dst=S1) / UDP())),
        (WAN, wire(Ether(src=MACS[S1], dst=WAN_MAC) / IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP())),
        (WAN, wire(Ether(src=MACS[S1], dst="02:00:00:00:99:99") / IP(src=S1, dst=WAN_IP) / UDP())),
        (LAN, wire(Ether(src=MACS[C1], dst="ff:ff:ff:ff:ff:ff") / IP(src=C1, dst="192.168.77.255") / UDP())),
        _udp(WAN, C1, S1, 5000, 53, b"answer"),
        (LAN, bytearray(wire(Ether(src=MACS[C1], dst=LAN_MAC)))[:30]),
    ]


def arp() -> list:
    return [
        _arp(LAN, C1, MACS[C1]),
        _arp(LAN, "192.168.77.50", "02:00:00:00:00:50"),
        _udp(LAN, C1, OTHER, 5000, 6000, b"to a host not yet resolved"),
        _arp(LAN, OTHER, "02:00:00:00:00:60", op=2, dst=LAN_MAC),
        _arp(LAN, "192.168.77.51", "02:00:00:00:00:51", op=2, target="192.168.77.51"),
        _arp(WAN, S1, MACS[S1]),
        _arp(WAN, "198.51.100.77", "02:00:00:00:01:77", op=2, dst=WAN_MAC),
        _arp(LAN, LAN_IP, "02:00:00:00:00:66"),
    ]


def ipv4() -> list:
    return [
        _udp(LAN, C1, S1, 5001, 53, b"options", options=[IPOption_NOP()] * 4),
        _udp(LAN, C1, S1, 5001, 53, b"ttl", ttl=1),
        _udp(LAN, C1, FAR, 5002, 9, bytes(1600), flags="DF"),
        _udp(LAN, C1, FAR, 5002, 9, bytes(3000)),
        _udp(LAN, C1, S1, 5003, 9, bytes(64), flags="MF", id=77),
        _udp(LAN, C1, S1, 5003, 9, bytes(64), frag=9, id=77),
        _udp(WAN, C1, S1, 5003, 9, bytes(64), frag=20, id=78),
        _udp(WAN, C1, S1, 5003, 9, bytes(64), flags="MF", id=78),
        _udp(LAN, C1, C2, 5004, 9, b"lan to lan"),
        _udp(LAN, C1, LAN_IP, 5005, 9, b"to the router"),
        _udp(LAN, C2, WAN_IP, 5001, 5001, b"hairpin"),
        (WAN, wire(from_wan(S1, UDP(sport=9, dport=5001), dst="198.51.100.9"))),
        _udp(WAN, C1, S1, 5001, 53, bytes(1600), flags="DF"),
    ]


def icmp() -> list:
    inner_udp = IP(src=WAN_IP, dst=S1) / UDP(sport=5000, dport=53)
    inner_tcp = IP(src=WAN_IP, dst=S1) / TCP(sport=40001, dport=80, flags="S", seq=1000)
    return [
        (LAN, wire(from_lan(C1, S1, ICMP(type=8, id=77, seq=1) / b"ping"))),
        (WAN, wire(from_wan(S1, ICMP(type=0, id=77, seq=1) / b"ping"))),
        (LAN, wire(from_lan(C1, LAN_IP, ICMP(type=8, id=1) / b"router"))),
        (WAN, wire(from_wan(S1, ICMP(type=8, id=2) / b"router"))),
        _udp(LAN, C1, S1, 5000, 53, b"query"),
        (WAN, wire(from_wan(S1, ICMP(type=3, code=3) / inner_udp))),
        (LAN, wire(from_lan(C1, S1, TCP(sport=40001, dport=80, flags="S", seq=1000)))),
        (WAN, wire(from_wan(S1, ICMP(type=11) / inner_tcp))),
        (LAN, wire(from_lan(C1, S1, ICMP(type=3, code=3) / IP(src=S1, dst=C1) / UDP(sport=53, dport=5000)))),
        (WAN, wire(from_wan(S1, ICMP(type=3, code=1) / IP(src=WAN_IP, dst=S1) / ICMP(type=8, id=77)))),
        (LAN, wire(from_lan(C1, S1, ICMP(type=13, id=78)))),
        (WAN, wire(from_wan(S1, ICMP(type=14, id=78)))),
    ]


def tcp() -> list:
    data = from_lan(C1, S1, TCP(sport=40002, dport=80, flags="PA", seq=1001, ack=5001) / Raw(bytes(3000)))
    web = [(True, b"GET / HTTP/1.0\r\n\r\n"), (False, b"HTTP/1.0 200 OK\r\n\r\n"),
           (LAN, partial_frame(data, gso_type=1, gso_size=1448)),          # a GSO super-frame, NEEDS_CSUM
           (WAN, wire(from_wan(S2, TCP(sport=80, dport=40003, flags="S"))))]
    return tcp_connection(C1, S1, 40002, 80, web) + tcp_connection(C2, S2, 40004, 443, [(True, b"hello")], close="R")


def udp() -> list:
    return [
        _udp(LAN, C1, S1, 5000, 53, b"query"),
        _udp(WAN, C1, S1, 5000, 53, b"answer"),
        _udp(WAN, C1, S2, 5000, 53, b"other server"),
        _udp(WAN, C1, S1, 6000, 53, b"unsolicited"),
        (LAN, wire(from_lan(C2, S1, UDP(sport=7000, dport=7000, chksum=0) / b"no checksum"))),
        (LAN, partial_frame(from_lan(C3, S2, UDP(sport=7001, dport=7001) / b"partial"))),
        _udp(WAN, C3, S2, 7001, 7001, b"back"),
    ]


def _pptp_control(extra_messages=()) -> list:
    """A PPTP control connection from C1 to S1 with one call: Call ID 7 inside, 99 at the server."""
    ocrq = pptp.OCRQ(call_id=7, call_serial_number=1)
    ocrp = pptp.OCRP(call_id=99, peer_call_id=7, result_code=1)
    messages = [(True, bytes(pptp.SCCRQ())), (False, bytes(pptp.SCCRP())), (True, bytes(ocrq)), (False, bytes(ocrp))]
    return tcp_connection(C1, S1, 40000, 1723, [*messages, *extra_messages])


def gre() -> list:
    return _pptp_control([_gre(LAN, C1, S1, 99), _gre(WAN, C1, S1, 7), _gre(WAN, C1, S2, 7),
                          _gre(LAN, C2, S1, 99), _gre(WAN, C1, S1, 8), _gre(LAN, C1, S1, 99), _gre(WAN, C1, S1, 7)])


def pptp_control() -> list:
    return _pptp_control([_gre(WAN, C1, S1, 7), (False, bytes(pptp.ECHO_RQ())), (True, bytes(pptp.ECHO_RP())),
                          (True, bytes(pptp.SLI(peer_call_id=99))), (True, bytes(pptp.ICRQ(call_id=8))),
                          (False, bytes(pptp.ICRP(call_id=98, peer_call_id=8))),
                          (True, bytes(pptp.CCRQ(call_id=7))), (False, bytes(pptp.CDN(call_id=99))),
                          (True, bytes(pptp.STOP_CCRQ()))])


def l2tp_tunnel() -> list:
    return [
        _udp(LAN, C1, S1, 1701, 1701, l2tp.sccrq(5)),
        _udp(LAN, C2, S1, 1701, 1701, l2tp.sccrq(5, host_name="second")),
        _udp(WAN, C1, S1, 1701, 1701, l2tp.sccrp(5, 77)),
        _udp(LAN, C1, S1, 1701, 1701, l2tp.scccn(77)),
        _udp(LAN, C1, S1, 1701, 1701, l2tp.icrq(77, 3)),
        _udp(WAN, C1, S1, 1701, 1701, l2tp.icrp(5, 3, 44)),
        _udp(LAN, C1, S1, 1701, 1701, l2tp.iccn(77, 44)),
        _udp(LAN, C1, S1, 1701, 1701, l2tp.data(77, 44)),
        _udp(WAN, C1, S1, 1701, 1701, l2tp.data(5, 3, sequence=True, offset=b"\0\0")),
        _udp(WAN, C1, S1, 1701, 1701, l2tp.hello(5)),
        _udp(LAN, C3, S1, 1701, 1701, l2tp.sccrq(6, hide_tunnel_id=b"secret")),
        _udp(LAN, C1, S1, 1701, 1701, l2tp.cdn(77, 44, 3)),
        _udp(LAN, C1, S1, 1701, 1701, l2tp.stopccn(77, 5)),
        _udp(WAN, C1, S1, 1701, 1701, l2tp.zlb(5)),
    ]


def ike_natt() -> list:
    one, two, three = ike.spi(1), ike.spi(2), ike.spi(3)
    return [
        _udp(LAN, C1, S2, 500, 500, ike.ikev2(one)),
        _udp(WAN, C1, S2, 500, 500, ike.ikev2(one, two, response=True)),
        _udp(LAN, C2, S2, 500, 500, ike.ikev1(three)),
        _udp(WAN, C2, S2, 500, 500, ike.ikev1(three, ike.spi(4), response=True)),
        _udp(WAN, C1, S2, 500, 500, ike.ikev2(ike.spi(9), exchange="CREATE_CHILD_SA")),
        _udp(LAN, C1, S2, 4500, 4500, ike.natt(ike.ikev2(one, two, exchange="IKE_AUTH", msg_id=1))),
        _udp(WAN, C1, S2, 4500, 4500, ike.natt(ike.ikev2(one, two, exchange="IKE_AUTH", response=True, msg_id=1))),
        _udp(LAN, C1, S2, 4500, 4500, ike.KEEPALIVE),
        _udp(LAN, C1, S2, 4500, 4500, bytes.fromhex("00001001") + bytes(20)),
        _udp(WAN, C1, S2, 4500, 4500, bytes.fromhex("00002001") + bytes(20)),
        _udp(WAN, C1, S2, 4500, 4500, b"\0\0"),
    ]


def esp() -> list:
    def raw_esp(port, inside, remote, spi):
        body = Raw(spi.to_bytes(4, "big") + bytes(4) + bytes(32))
        pkt = from_lan(inside, remote, body, proto=50) if port == LAN else from_wan(remote, body, proto=50)
        return port, wire(pkt)
    return [raw_esp(LAN, C1, S2, 0x1001), raw_esp(WAN, C1, S2, 0x2001), raw_esp(LAN, C2, S2, 0x1002),
            raw_esp(WAN, C2, S2, 0x2002), raw_esp(WAN, C1, S2, 0x2003), raw_esp(WAN, C1, S1, 0x3001),
            raw_esp(LAN, C1, S2, 0x1001), raw_esp(WAN, C1, S2, 0)]


SCRIPTS = {"ethernet": ethernet, "arp": arp, "ipv4": ipv4, "icmp": icmp, "tcp": tcp, "udp": udp, "gre": gre,
           "pptp": pptp_control, "l2tp": l2tp_tunnel, "ike": ike_natt, "esp": esp}
"""Target -> its conversation."""


@cache
def script(name: str) -> tuple[tuple[int, bytes], ...]:
    """A target's conversation as immutable frames (built once: scapy is slow)."""
    return tuple((port, bytes(frame)) for port, frame in SCRIPTS[name]())


def all_frames() -> tuple[tuple[int, bytes], ...]:
    return tuple(step for name in SCRIPTS for step in script(name))
