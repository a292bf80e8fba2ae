"""VPNs that need no helper, named all the same: OpenVPN and WireGuard, recognised by port and first bytes.

Theory of operation
-------------------
OpenVPN and WireGuard run over one plain UDP (or TCP) flow: no related flow
to expect, no ID inside to rewrite, nothing a NAT must do beyond what it does
for any datagram.  So they get no helper and no switch; a recogniser only
names them, so that ``ctl sessions``, the control socket and the dashboard
can say what a session is.

A recogniser is a record, as a helper is (STYLE.md, "One place per
protocol"): its name, title, transport, well-known port and a predicate on
the first payload bytes.  The data plane holds ``BY_PORT`` and asks it once
per new flow that no helper took (``forward.Forwarding._open_out``, the cold
path): one dictionary lookup by (protocol, remote port), then the predicate
on the opening datagram's payload.  The answer is kept on the session
(``Session.recognised``) and a frame of an established flow costs nothing
more.  Names of protocols live here and nowhere else in the data plane.

UDP is recognised only by its first bytes: a datagram to the port that does
not look like the protocol is plain UDP.  A TCP connection opens with a SYN,
which carries no payload (unless TCP Fast Open, RFC 7413 §3), and its first
data comes when the session is established and the fast path forwards it
without Python; so TCP is recognised by its port ("port"), or by the bytes
its SYN carries if it carries any ("first bytes").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .packet.frame import IpProto

BY_PORT, BY_BYTES = "port", "first bytes"
"""How a session was recognised: ``recognised_by`` in its session dict (``schema.RECOGNISED_BY``)."""
PROTO_NAMES = {IpProto.UDP: "udp", IpProto.TCP: "tcp"}

# -- WireGuard: the whitepaper (J. A. Donenfeld, "WireGuard: Next Generation Kernel Network Tunnel", NDSS 2017,
# https://www.wireguard.com/papers/wireguard.pdf), §5.4 -------------------------------------------------------

WG_INITIATION, WG_TRANSPORT_DATA = 1, 4
"""``msg.type`` of the first handshake message (§5.4.2) and of transport data (§5.4.6)."""
WG_INITIATION_SIZE = 148
"""§5.4.2: type (1) + reserved zeros (3) + sender (4) + ephemeral (32) + static (32 + 16) + timestamp (12 + 16)
+ mac1 (16) + mac2 (16)."""
WG_TRANSPORT_MIN = 32
"""§5.4.6: type (1) + reserved (3) + receiver (4) + counter (8) + the packet, zero-padded to a multiple of 16 and
sealed with a 16-byte tag (a keepalive: the tag alone)."""


def wireguard(payload: bytes) -> bool:
    """A WireGuard handshake initiation (§5.4.2: type 1, three reserved zero bytes, 148 bytes in all), or
    transport data (§5.4.6: type 4, three zero bytes, 32 bytes and a multiple of 16 after them): a tunnel whose
    NAT session expired while its keys lived on starts its new flow with data, not a handshake."""
    if payload[1:4] != b"\0\0\0":
        return False
    kind, size = payload[0], len(payload)
    if kind == WG_INITIATION:
        return size == WG_INITIATION_SIZE
    return kind == WG_TRANSPORT_DATA and size >= WG_TRANSPORT_MIN and size % 16 == 0


# -- OpenVPN: src/openvpn/ssl_pkt.h (opcodes) and doc/doxygen/doc_protocol_overview.h ("TCP/UDP packet
# format") in OpenVPN's source --------------------------------------------------------------------------------

P_CONTROL_HARD_RESET_CLIENT_V2, P_CONTROL_HARD_RESET_CLIENT_V3 = 7, 10
"""ssl_pkt.h: a client's first packet ("initial key from client, forget previous state"); V3 with a
client-specific tls-crypt key (tls-crypt-v2)."""
P_OPCODE_SHIFT = 3
"""ssl_pkt.h: the first byte is opcode << 3 | key_id (key_id: the low 3 bits)."""
OPENVPN_RESET_MIN = 14
"""The shortest hard reset: opcode/key_id (1), session_id (8), ack array length (1), packet-id (4); tls-auth
and tls-crypt add an HMAC and a longer packet-id."""
OPENVPN_RESET_MAX = 256 + 1024
"""The longest: a hard reset carries no TLS data, so its header (under 256 bytes with the largest HMAC), and with
tls-crypt-v2 the wrapped client key after it, at most TLS_CRYPT_V2_MAX_WKC_LEN = 1024 bytes (tls_crypt.h)."""


def openvpn(payload: bytes) -> bool:
    """A client's hard reset: opcode P_CONTROL_HARD_RESET_CLIENT_V2 or _V3 in the high 5 bits of the first
    byte, any key_id, and the length a hard reset can have."""
    return (OPENVPN_RESET_MIN <= len(payload) <= OPENVPN_RESET_MAX
            and payload[0] >> P_OPCODE_SHIFT in (P_CONTROL_HARD_RESET_CLIENT_V2, P_CONTROL_HARD_RESET_CLIENT_V3))


def openvpn_tcp(payload: bytes) -> bool:
    """The same after the 16-bit packet length that frames each packet on TCP (doc_protocol_overview.h:
    "Packet length (16 bits, unsigned) -- TCP only, always sent as plaintext"); the length must cover a hard
    reset (``OPENVPN_RESET_MIN`` to ``_MAX``), whose first bytes the segment holds (the rest may come in the
    next one)."""
    length = int.from_bytes(payload[:2], "big")
    return OPENVPN_RESET_MIN <= length <= OPENVPN_RESET_MAX and openvpn(payload[2:2 + OPENVPN_RESET_MIN])


# -- the registry ----------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Recogniser:
    """One protocol that needs no helper: what it is called and how its first datagram looks."""
    name: str
    """``recognised`` in session dicts."""
    title: str
    proto: int
    """``IpProto.UDP`` or ``IpProto.TCP``."""
    port: int
    """The server's well-known port: a new flow to it is looked at."""
    matches: Callable[[bytes], bool]
    """The predicate on the first payload bytes of the flow's opening datagram (not empty)."""
    by_bytes: tuple[str, str] = field(init=False, repr=False, compare=False)
    by_port: tuple[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # What ``Session.recognised`` holds: one tuple per recogniser, shared by all its sessions.
        object.__setattr__(self, "by_bytes", (self.name, BY_BYTES))
        object.__setattr__(self, "by_port", (self.name, BY_PORT))

    def recognise(self, payload: bytes) -> tuple[str, str] | None:
        """(name, how) for a new flow to this port with ``payload`` in its opening datagram, or None: it is not
        this protocol.  An empty payload is recognised by port on TCP (a SYN), never on UDP."""
        if payload:
            return self.by_bytes if self.matches(payload) else None
        return self.by_port if self.proto == IpProto.TCP else None

    def description(self) -> dict:
        """As ``version()["recognisers"]`` lists it (``schema.RECOGNISER_FIELDS``)."""
        return {"name": self.name, "title": self.title, "proto": PROTO_NAMES[self.proto], "port": self.port}


RECOGNISERS = (
    Recogniser("openvpn", "OpenVPN", IpProto.UDP, 1194, openvpn),
    Recogniser("openvpn-tcp", "OpenVPN (TCP)", IpProto.TCP, 1194, openvpn_tcp),
    Recogniser("wireguard", "WireGuard", IpProto.UDP, 51820, wireguard),
)
"""The protocols recognised, in the order the dashboard lists them (ports: IANA's for OpenVPN, 1194; WireGuard's
examples and wg-quick's habit, 51820)."""


def by_port(recognisers: Iterable[Recogniser]) -> dict[tuple[int, int], Recogniser]:
    """(IP protocol, port) -> its recogniser, as the data plane looks them up; two on one port are an error."""
    table: dict[tuple[int, int], Recogniser] = {}
    for recogniser in recognisers:
        key = (int(recogniser.proto), recogniser.port)
        if key in table:
            raise ValueError(f"{recogniser.name} and {table[key].name} both recognise {PROTO_NAMES[key[0]]} "
                             f"port {key[1]}")
        table[key] = recogniser
    return table


BY_PORT = by_port(RECOGNISERS)


def descriptions(recognisers: Iterable[Recogniser]) -> list[dict]:
    """``version()["recognisers"]``."""
    return [recogniser.description() for recogniser in recognisers]
