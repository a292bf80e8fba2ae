"""PPTP control connections and GRE through the pure router, with scapy building and parsing the messages."""

from __future__ import annotations

from scapy.layers.inet import TCP
from scapy.layers.l2 import GRE_PPTP
from scapy.layers import pptp as m
from scapy.packet import Raw

from tests.unit.frames import LAN, WAN, from_lan, from_wan, step

OCRQ, OCRP = m.PPTPOutgoingCallRequest, m.PPTPOutgoingCallReply
ICRQ, ICCN = m.PPTPIncomingCallRequest, m.PPTPIncomingCallConnected


def ICRP(**fields):  # noqa: N802 - named like the other message classes
    """Incoming-Call-Reply; scapy's default length field says 148, RFC 2637 §2.10 and its own bytes say 24."""
    return m.PPTPIncomingCallReply(len=24, **fields)


CCRQ, CDN = m.PPTPCallClearRequest, m.PPTPCallDisconnectNotify
WEN, SLI = m.PPTPWANErrorNotify, m.PPTPSetLinkInfo
SCCRQ, SCCRP = m.PPTPStartControlConnectionRequest, m.PPTPStartControlConnectionReply
STOP_CCRQ, STOP_CCRP = m.PPTPStopControlConnectionRequest, m.PPTPStopControlConnectionReply
ECHO_RQ, ECHO_RP = m.PPTPEchoRequest, m.PPTPEchoReply


def payload_of(pkt) -> bytes:
    return bytes(pkt[TCP].payload)


class Control:
    """A PPTP control connection between an inside host and a remote one, through the router.

    ``inside_is_client`` says who opened it: the inside host (to port 1723 on
    the remote) or the remote (to a port forward of 1723 on the WAN address).
    """

    def __init__(self, r, inside: str, remote: str, inside_port: int = 40000, inside_is_client: bool = True,
                 now: float = 1.0):
        self.r, self.inside, self.remote = r, inside, remote
        self.inside_seq, self.remote_seq = 1000, 5000
        self.now = now
        if inside_is_client:
            self.inside_port, self.remote_port = inside_port, 1723
            (syn,) = self._out(flags="S")[WAN]
            self.outside_port = syn[TCP].sport
            self._in(flags="SA")
        else:
            self.inside_port, self.remote_port, self.outside_port = 1723, inside_port, 1723
            self._in(flags="S")
            self._out(flags="SA")
        self.inside_seq += 1
        self.remote_seq += 1

    def _out(self, data: bytes = b"", flags="A", seq=None):
        l4 = TCP(sport=self.inside_port, dport=self.remote_port, flags=flags,
                 seq=self.inside_seq if seq is None else seq, ack=self.remote_seq) / Raw(data)
        return step(self.r, LAN, from_lan(self.inside, self.remote, l4), self.now)

    def _in(self, data: bytes = b"", flags="A", seq=None):
        l4 = TCP(sport=self.remote_port, dport=self.outside_port, flags=flags,
                 seq=self.remote_seq if seq is None else seq, ack=self.inside_seq) / Raw(data)
        return step(self.r, WAN, from_wan(self.remote, l4), self.now)

    def send_out(self, data: bytes, seq=None, advance=True) -> list:
        """The inside host sends ``data``; returns what left on the WAN."""
        out = self._out(bytes(data), seq=seq)[WAN]
        if advance and seq is None:
            self.inside_seq += len(bytes(data))
        return out

    def send_in(self, data: bytes, seq=None, advance=True) -> list:
        out = self._in(bytes(data), seq=seq)[LAN]
        if advance and seq is None:
            self.remote_seq += len(bytes(data))
        return out

    def out_message(self, msg):
        """Send one message out; return it as the remote peer receives it (parsed by scapy)."""
        (pkt,) = self.send_out(bytes(msg))
        return type(msg)(payload_of(pkt))

    def in_message(self, msg):
        (pkt,) = self.send_in(bytes(msg))
        return type(msg)(payload_of(pkt))

    def close(self, flags="R"):
        return self._out(flags=flags)


def gre_in(r, remote: str, call_id: int, data: bytes = b"\xff\x03\xc0\x21ppp", now: float = 2.0):
    pkt = from_wan(remote, GRE_PPTP(key_present=1, seqnum_present=1, call_id=call_id, payload_len=len(data),
                                    sequence_number=1) / Raw(data))
    return step(r, WAN, pkt, now)[LAN]


def gre_out(r, inside: str, remote: str, call_id: int, data: bytes = b"\xff\x03\xc0\x21ppp", now: float = 2.0):
    pkt = from_lan(inside, remote, GRE_PPTP(key_present=1, seqnum_present=1, call_id=call_id,
                                            payload_len=len(data), sequence_number=1) / Raw(data))
    return step(r, LAN, pkt, now)[WAN]


def call_up(control: Control, call_id: int, server_call_id: int):
    """OCRQ from the inside client, OCRP from the server; returns the translated Call ID."""
    sent = control.out_message(OCRQ(call_id=call_id, call_serial_number=1))
    reply = control.in_message(OCRP(call_id=server_call_id, peer_call_id=sent.call_id, result_code=1))
    assert reply.peer_call_id == call_id
    return sent.call_id

