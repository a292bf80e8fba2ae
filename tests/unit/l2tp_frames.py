"""L2TP v2 messages (RFC 2661) built byte by byte, and LACs and LNSs that send them through the router.

The builders pack every header and AVP with ``struct`` from the RFC's
layouts, independently of the router's parser; ``test_l2tp.py`` checks them
against the bytes xl2tpd put on the wire (``tests/data/l2tp_fake_2cli.pcap``)
and against scapy's L2TP header parser.  Default AVPs are the ones xl2tpd
sends, in its order, so a built SCCRQ is byte for byte the captured one.

Names follow the RFC: a header carries the *receiver's* Tunnel ID and Session
ID (§3.1); each side announces its own in the Assigned Tunnel ID and
Assigned Session ID AVPs (§4.4.3, §4.4.4).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from enum import IntEnum

from scapy.layers.inet import IP, UDP
from scapy.packet import Raw

from tests.unit.frames import LAN, WAN, WAN_IP, from_lan, from_wan, step

L2TP_PORT = 1701
T_BIT, L_BIT, S_BIT, O_BIT, P_BIT = 0x8000, 0x4000, 0x0800, 0x0200, 0x0100   # §3.1
VERSION = 2
M_BIT, H_BIT = 0x8000, 0x4000                                                  # §4.1
CONTROL = T_BIT | L_BIT | S_BIT | VERSION
HEADER = struct.Struct("!HHHHHH")      # flags/version, Length, Tunnel ID, Session ID, Ns, Nr
AVP_HEADER = struct.Struct("!HHH")     # M/H bits + length, Vendor ID, Attribute Type
LCP_ECHO = bytes.fromhex("ff03c021090100080000000a")   # PPP in HDLC-like framing: LCP Echo-Request


class MessageType(IntEnum):
    """Control message types (RFC 2661 §3.2)."""
    SCCRQ = 1
    SCCRP = 2
    SCCCN = 3
    STOPCCN = 4
    HELLO = 6
    OCRQ = 7
    OCRP = 8
    OCCN = 9
    ICRQ = 10
    ICRP = 11
    ICCN = 12
    CDN = 14
    WEN = 15
    SLI = 16


class Avp(IntEnum):
    """Attribute types (RFC 2661 §4.4)."""
    MESSAGE_TYPE = 0
    RESULT_CODE = 1
    PROTOCOL_VERSION = 2
    FRAMING_CAPABILITIES = 3
    BEARER_CAPABILITIES = 4
    TIE_BREAKER = 5
    FIRMWARE_REVISION = 6
    HOST_NAME = 7
    VENDOR_NAME = 8
    ASSIGNED_TUNNEL_ID = 9
    RECEIVE_WINDOW_SIZE = 10
    ASSIGNED_SESSION_ID = 14
    CALL_SERIAL_NUMBER = 15
    MINIMUM_BPS = 16
    MAXIMUM_BPS = 17
    BEARER_TYPE = 18
    FRAMING_TYPE = 19
    CALLED_NUMBER = 21
    TX_CONNECT_SPEED = 24
    CALL_ERRORS = 34
    ACCM = 35
    RANDOM_VECTOR = 36
    RX_CONNECT_SPEED = 38


MT = MessageType


def u16(value: int) -> bytes:
    return struct.pack("!H", value)


def u32(value: int) -> bytes:
    return struct.pack("!I", value)


def avp(attr: int, value: bytes = b"", mandatory: bool = True, hidden: bool = False, vendor: int = 0,
        length: int | None = None) -> bytes:
    """One AVP (§4.1); ``length`` overrides the 10-bit length field (for malformed ones)."""
    bits = (M_BIT if mandatory else 0) | (H_BIT if hidden else 0) | ((AVP_HEADER.size + len(value)
                                                                      if length is None else length) & 0x3FF)
    return AVP_HEADER.pack(bits, vendor, attr) + value


def hidden_avp(attr: int, value: bytes, secret: bytes, random_vector: bytes, padding: bytes = b"",
               mandatory: bool = True) -> bytes:
    """An AVP hidden as RFC 2661 §4.3 says: Original Length, value and padding, XORed with an MD5 chain
    over the attribute type, the shared secret and the Random Vector AVP that must precede it."""
    plain = u16(len(value)) + value + padding
    out, chain = bytearray(), u16(attr) + secret + random_vector
    for i in range(0, len(plain), 16):
        block = hashlib.md5(chain).digest()
        piece = bytes(a ^ b for a, b in zip(plain[i:i + 16], block))
        out += piece
        chain = secret + piece
    return avp(attr, bytes(out), mandatory=mandatory, hidden=True)


def message_type(kind: int) -> bytes:
    return avp(Avp.MESSAGE_TYPE, u16(kind))


def control(tunnel_id: int, session_id: int = 0, avps: bytes = b"", ns: int = 0, nr: int = 0,
            flags: int = CONTROL, length: int | None = None) -> bytes:
    """A control message (§3.1): T, L and S set, no offset; ``flags``/``length`` override for malformed ones."""
    size = HEADER.size + len(avps)
    return HEADER.pack(flags, size if length is None else length, tunnel_id, session_id, ns, nr) + avps


def zlb(tunnel_id: int, ns: int = 0, nr: int = 0) -> bytes:
    """Zero-Length Body: a control header alone, an explicit acknowledgement (§5.8)."""
    return control(tunnel_id, 0, b"", ns, nr)


def data(tunnel_id: int, session_id: int, ppp: bytes = LCP_ECHO, length: bool = True, sequence: bool = False,
         offset: bytes | None = None, priority: bool = False, ns: int = 0, nr: int = 0,
         version: int = VERSION) -> bytes:
    """A data message (§3.1) carrying ``ppp``; xl2tpd sends them with L set, nothing else."""
    flags = version | (L_BIT if length else 0) | (S_BIT if sequence else 0) | (P_BIT if priority else 0) \
        | (O_BIT if offset is not None else 0)
    rest = u16(tunnel_id) + u16(session_id)
    if sequence:
        rest += u16(ns) + u16(nr)
    if offset is not None:
        rest += u16(len(offset)) + offset
    rest += ppp
    if length:
        return u16(flags) + u16(4 + len(rest)) + rest
    return u16(flags) + rest


# -- control messages, one builder per type with the AVPs RFC 2661 §6 requires (xl2tpd's where it sends more) --

def sccrq(tunnel_id: int, host_name: str | None = "lac", hide_tunnel_id: bytes | None = None, ns: int = 0,
          nr: int = 0, extra: bytes = b"") -> bytes:
    """Start-Control-Connection-Request (§6.1) as xl2tpd sends it; ``hide_tunnel_id`` is a shared secret."""
    if hide_tunnel_id is None:
        assigned = avp(Avp.ASSIGNED_TUNNEL_ID, u16(tunnel_id))
    else:
        vector = bytes(range(16))
        assigned = avp(Avp.RANDOM_VECTOR, vector) + hidden_avp(Avp.ASSIGNED_TUNNEL_ID, u16(tunnel_id),
                                                               hide_tunnel_id, vector, padding=b"\x00" * 3)
    return control(0, 0, message_type(MT.SCCRQ) + _greeting(host_name) + assigned
                   + avp(Avp.RECEIVE_WINDOW_SIZE, u16(4)) + extra, ns, nr)


def sccrp(peer_tunnel_id: int, tunnel_id: int, host_name: str | None = "lns", ns: int = 0, nr: int = 1) -> bytes:
    """Start-Control-Connection-Reply (§6.2): the header names the requester's Tunnel ID."""
    return control(peer_tunnel_id, 0, message_type(MT.SCCRP) + _greeting(host_name)
                   + avp(Avp.ASSIGNED_TUNNEL_ID, u16(tunnel_id)) + avp(Avp.RECEIVE_WINDOW_SIZE, u16(4)), ns, nr)


def _greeting(host_name: str | None) -> bytes:
    """Protocol Version 1.0, Framing and Bearer Capabilities, Firmware Revision, Host Name, Vendor Name."""
    return (avp(Avp.PROTOCOL_VERSION, b"\x01\x00") + avp(Avp.FRAMING_CAPABILITIES, u32(3))
            + avp(Avp.BEARER_CAPABILITIES, u32(0)) + avp(Avp.FIRMWARE_REVISION, u16(0x0690), mandatory=False)
            + (b"" if host_name is None else avp(Avp.HOST_NAME, host_name.encode()))
            + avp(Avp.VENDOR_NAME, b"xelerance.com", mandatory=False))


def scccn(peer_tunnel_id: int, ns: int = 1, nr: int = 1) -> bytes:
    """Start-Control-Connection-Connected (§6.3)."""
    return control(peer_tunnel_id, 0, message_type(MT.SCCCN), ns, nr)


def stopccn(peer_tunnel_id: int, tunnel_id: int, result: int = 1, ns: int = 2, nr: int = 2) -> bytes:
    """Stop-Control-Connection-Notification (§6.4): the sender's Assigned Tunnel ID and a Result Code."""
    return control(peer_tunnel_id, 0, message_type(MT.STOPCCN) + avp(Avp.ASSIGNED_TUNNEL_ID, u16(tunnel_id))
                   + avp(Avp.RESULT_CODE, u16(result)), ns, nr)


def hello(peer_tunnel_id: int, ns: int = 2, nr: int = 2) -> bytes:
    """Hello (§6.5)."""
    return control(peer_tunnel_id, 0, message_type(MT.HELLO), ns, nr)


def icrq(peer_tunnel_id: int, session_id: int, serial: int = 1, ns: int = 2, nr: int = 1) -> bytes:
    """Incoming-Call-Request (§6.6), as xl2tpd sends it."""
    return control(peer_tunnel_id, 0, message_type(MT.ICRQ) + avp(Avp.ASSIGNED_SESSION_ID, u16(session_id))
                   + avp(Avp.CALL_SERIAL_NUMBER, u32(serial)) + avp(Avp.BEARER_TYPE, u32(0)), ns, nr)


def icrp(peer_tunnel_id: int, peer_session_id: int, session_id: int, ns: int = 1, nr: int = 3) -> bytes:
    """Incoming-Call-Reply (§6.7): the header names the requester's Session ID."""
    return control(peer_tunnel_id, peer_session_id, message_type(MT.ICRP)
                   + avp(Avp.ASSIGNED_SESSION_ID, u16(session_id)), ns, nr)


def iccn(peer_tunnel_id: int, peer_session_id: int, ns: int = 3, nr: int = 2) -> bytes:
    """Incoming-Call-Connected (§6.8), as xl2tpd sends it."""
    return control(peer_tunnel_id, peer_session_id, message_type(MT.ICCN) + avp(Avp.TX_CONNECT_SPEED, u32(0))
                   + avp(Avp.FRAMING_TYPE, u32(1)) + avp(Avp.RX_CONNECT_SPEED, u32(0), mandatory=False), ns, nr)


def ocrq(peer_tunnel_id: int, session_id: int, serial: int = 1, ns: int = 2, nr: int = 1) -> bytes:
    """Outgoing-Call-Request (§6.9)."""
    return control(peer_tunnel_id, 0, message_type(MT.OCRQ) + avp(Avp.ASSIGNED_SESSION_ID, u16(session_id))
                   + avp(Avp.CALL_SERIAL_NUMBER, u32(serial)) + avp(Avp.MINIMUM_BPS, u32(9600))
                   + avp(Avp.MAXIMUM_BPS, u32(100_000_000)) + avp(Avp.BEARER_TYPE, u32(3))
                   + avp(Avp.FRAMING_TYPE, u32(3)) + avp(Avp.CALLED_NUMBER, b"5551234"), ns, nr)


def ocrp(peer_tunnel_id: int, peer_session_id: int, session_id: int, ns: int = 1, nr: int = 3) -> bytes:
    """Outgoing-Call-Reply (§6.10)."""
    return control(peer_tunnel_id, peer_session_id, message_type(MT.OCRP)
                   + avp(Avp.ASSIGNED_SESSION_ID, u16(session_id)), ns, nr)


def occn(peer_tunnel_id: int, peer_session_id: int, ns: int = 2, nr: int = 3) -> bytes:
    """Outgoing-Call-Connected (§6.11)."""
    return control(peer_tunnel_id, peer_session_id, message_type(MT.OCCN) + avp(Avp.TX_CONNECT_SPEED, u32(64000))
                   + avp(Avp.FRAMING_TYPE, u32(1)), ns, nr)


def cdn(peer_tunnel_id: int, peer_session_id: int, session_id: int, result: int = 3, ns: int = 4,
        nr: int = 4) -> bytes:
    """Call-Disconnect-Notify (§6.12): the sender's Assigned Session ID and a Result Code."""
    return control(peer_tunnel_id, peer_session_id, message_type(MT.CDN) + avp(Avp.RESULT_CODE, u16(result))
                   + avp(Avp.ASSIGNED_SESSION_ID, u16(session_id)), ns, nr)


def wen(peer_tunnel_id: int, peer_session_id: int, ns: int = 4, nr: int = 4) -> bytes:
    """WAN-Error-Notify (§6.13): Call Errors, reserved word then six 32-bit counters."""
    return control(peer_tunnel_id, peer_session_id, message_type(MT.WEN)
                   + avp(Avp.CALL_ERRORS, u16(0) + bytes(24)), ns, nr)


def sli(peer_tunnel_id: int, peer_session_id: int, ns: int = 4, nr: int = 4) -> bytes:
    """Set-Link-Info (§6.14): ACCM, reserved word then send and receive ACCM."""
    return control(peer_tunnel_id, peer_session_id, message_type(MT.SLI)
                   + avp(Avp.ACCM, u16(0) + u32(0xFFFFFFFF) + u32(0xFFFFFFFF)), ns, nr)


# -- an independent reading of what came out ------------------------------------------------------------------

@dataclass
class ParsedAvp:
    attr: int
    vendor: int
    mandatory: bool
    hidden: bool
    value: bytes
    at: int
    """Offset of the value in the message."""


@dataclass
class Parsed:
    flags: int
    tunnel_id: int
    session_id: int
    length: int | None = None
    ns: int | None = None
    nr: int | None = None
    avps: list[ParsedAvp] = field(default_factory=list)
    tunnel_id_at: int = 0

    @property
    def type(self) -> int | None:
        return int.from_bytes(self.avps[0].value, "big") if self.avps else None

    def avp(self, attr: int) -> ParsedAvp:
        (found,) = [a for a in self.avps if a.attr == attr and a.vendor == 0]
        return found

    def value(self, attr: int) -> int:
        return int.from_bytes(self.avp(attr).value, "big")


def parse(message: bytes) -> Parsed:
    """A well-formed L2TP v2 message (the tests' own reading, never the router's)."""
    flags, = struct.unpack_from("!H", message, 0)
    i, length = 2, None
    if flags & L_BIT:
        length, = struct.unpack_from("!H", message, i)
        i += 2
    out = Parsed(flags, *struct.unpack_from("!HH", message, i), length=length, tunnel_id_at=i)
    i += 4
    if flags & S_BIT:
        out.ns, out.nr = struct.unpack_from("!HH", message, i)
        i += 4
    if flags & O_BIT:
        i += 2 + struct.unpack_from("!H", message, i)[0]
    if flags & T_BIT:
        while i < length:
            bits, vendor, attr = AVP_HEADER.unpack_from(message, i)
            size = bits & 0x3FF
            assert size >= 6 and i + size <= length, f"AVP at {i}: length {size}"
            out.avps.append(ParsedAvp(attr, vendor, bool(bits & M_BIT), bool(bits & H_BIT),
                                      message[i + 6:i + size], i + 6))
            i += size
    return out


def with_u16(message: bytes, at: int, value: int) -> bytes:
    """``message`` with the 16-bit field at ``at`` set to ``value``."""
    return message[:at] + u16(value) + message[at + 2:]


# -- through the router -------------------------------------------------------------------------------------------

def udp_payload(pkt) -> bytes:
    """The UDP payload of an emitted frame, sliced from its bytes (no dissector in between)."""
    raw, ip = bytes(pkt), pkt[IP]
    start = 14 + ip.ihl * 4
    return raw[start + 8:14 + ip.len]


def out(r, client: str, message: bytes, lns: str, sport: int = L2TP_PORT, dport: int = L2TP_PORT,
        now: float = 1.0, chksum: int | None = None) -> list:
    """``client`` on the LAN sends ``message`` to ``lns``; the frames that left on the WAN."""
    udp = UDP(sport=sport, dport=dport) if chksum is None else UDP(sport=sport, dport=dport, chksum=chksum)
    return [p for p in step(r, LAN, from_lan(client, lns, udp / Raw(message)), now)[WAN] if IP in p]   # not ARP


def into(r, lns: str, message: bytes, dport: int = L2TP_PORT, sport: int = L2TP_PORT, now: float = 1.0,
         chksum: int | None = None) -> list:
    """``lns`` sends ``message`` to the router's WAN address; the frames that left on the LAN."""
    udp = UDP(sport=sport, dport=dport) if chksum is None else UDP(sport=sport, dport=dport, chksum=chksum)
    return [p for p in step(r, WAN, from_wan(lns, udp / Raw(message)), now)[LAN] if IP in p]


class Lac:
    """An L2TP tunnel from a LAC on the LAN (``client``) to an LNS on the WAN, through the router.

    It remembers what the router did to it: the outside port the LNS sees and
    the Tunnel ID the LNS was told (``translated``), so that the LNS's side
    can address it as a real LNS would.
    """

    def __init__(self, r, client: str, lns: str, tunnel_id: int, port: int = L2TP_PORT,
                 lns_port: int = L2TP_PORT, host_name: str | None = "lac"):
        self.r, self.client, self.lns = r, client, lns
        self.tunnel_id, self.port, self.lns_port, self.host_name = tunnel_id, port, lns_port, host_name
        self.translated: int | None = None
        self.outside_port: int | None = None
        self.peer_tunnel_id: int | None = None

    def send(self, message: bytes, now: float = 1.0, **udp) -> bytes | None:
        """The LAC sends; what the LNS got (None if nothing left the router)."""
        frames = out(self.r, self.client, message, self.lns, self.port, self.lns_port, now, **udp)
        assert len(frames) <= 1
        if not frames:
            return None
        (pkt,) = frames
        assert pkt[IP].src == WAN_IP and pkt[IP].dst == self.lns and pkt[UDP].dport == self.lns_port
        self.outside_port = pkt[UDP].sport
        return udp_payload(pkt)

    def receive(self, message: bytes, now: float = 1.0, sport: int | None = None, **udp) -> bytes | None:
        """The LNS sends to this LAC's outside port; what the LAC got (None if nothing reached it)."""
        frames = into(self.r, self.lns, message, self.outside_port, self.lns_port if sport is None else sport,
                      now, **udp)
        delivered = [p for p in frames if p[IP].dst == self.client]
        assert delivered == frames, f"delivered to {[p[IP].dst for p in frames]}, not {self.client}"
        if not frames:
            return None
        (pkt,) = frames
        assert pkt[IP].src == self.lns and pkt[UDP].dport == self.port
        return udp_payload(pkt)

    def request(self, now: float = 1.0) -> bytes:
        """SCCRQ; learns the Assigned Tunnel ID the LNS was told."""
        seen = self.send(sccrq(self.tunnel_id, self.host_name), now)
        assert seen is not None, "the SCCRQ did not leave the router"
        self.translated = parse(seen).value(Avp.ASSIGNED_TUNNEL_ID)
        return seen

    def reply(self, peer_tunnel_id: int, now: float = 1.0, sport: int | None = None) -> bytes | None:
        """SCCRP from the LNS, addressed (header Tunnel ID) as the LNS knows this LAC."""
        self.peer_tunnel_id = peer_tunnel_id
        if sport is not None:
            self.lns_port = sport
        return self.receive(sccrp(self.translated, peer_tunnel_id), now)

    def connect(self, now: float = 1.0) -> bytes | None:
        return self.send(scccn(self.peer_tunnel_id), now)

    def up(self, peer_tunnel_id: int, now: float = 1.0) -> "Lac":
        """SCCRQ, SCCRP, SCCCN and the LNS's ZLB: an established tunnel."""
        self.request(now)
        assert self.reply(peer_tunnel_id, now) is not None
        assert self.connect(now) is not None
        assert self.receive(zlb(self.translated, 1, 2), now) is not None
        return self

    def call(self, session_id: int, peer_session_id: int, now: float = 1.0) -> None:
        """ICRQ, ICRP, ICCN: a session, each message checked to cross unchanged but for the tunnel header."""
        sent = icrq(self.peer_tunnel_id, session_id)
        assert self.send(sent, now) == sent
        assert self.receive(icrp(self.translated, session_id, peer_session_id), now) \
            == icrp(self.tunnel_id, session_id, peer_session_id)
        sent = iccn(self.peer_tunnel_id, peer_session_id)
        assert self.send(sent, now) == sent

    def data_in(self, session_id: int, now: float = 1.0, ppp: bytes = LCP_ECHO) -> bytes | None:
        """A data message from the LNS to this LAC's session."""
        return self.receive(data(self.translated, session_id, ppp), now)

    def data_out(self, peer_session_id: int, now: float = 1.0, ppp: bytes = LCP_ECHO) -> bytes | None:
        return self.send(data(self.peer_tunnel_id, peer_session_id, ppp), now)
