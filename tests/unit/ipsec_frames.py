"""IKE, NAT-T and ESP datagrams built by scapy, and the LAN clients and WAN gateways that send them through the router.

The builders never use the router's parser: IKEv1 (ISAKMP, RFC 2408 §3.1)
comes from ``scapy.layers.isakmp``, IKEv2 (RFC 7296 §3.1) from
``scapy.contrib.ikev2``, the NAT-T framing (RFC 3948 §2: the four-byte
non-ESP marker, the one-byte 0xFF keepalive) from ``scapy.layers.ipsec``,
and ESP packets are really encrypted and authenticated by scapy's
``SecurityAssociation`` (AES-CBC, HMAC-SHA1-96, tunnel mode), so a test can
prove that what crossed the router still decrypts at the other end.

``test_ipsec.py`` checks the builders against scapy's own dissectors and
against the bytes strongSwan put on the wire (``tests/data/*.pcap``).
"""

from __future__ import annotations

import hashlib

from scapy.contrib.ikev2 import IKEv2, IKEv2_Encrypted, IKEv2_Nonce, IKEv2_Proposal, IKEv2_SA, IKEv2_Transform
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.ipsec import ESP, NAT_KEEPALIVE, NON_ESP, SecurityAssociation
from scapy.layers.isakmp import ISAKMP, ISAKMP_payload_Proposal, ISAKMP_payload_SA, ISAKMP_payload_Transform
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import rdpcap

from tests.unit.frames import C1, C2, C3, GW, LAN, S1, S2, WAN, WAN_IP, from_lan, from_wan, learn, step

IKE_PORT, NATT_PORT = 500, 4500
NO_SPI = bytes(8)
MARKER = bytes(NON_ESP())                     # RFC 3948 §2.2: four zero bytes before an IKE message on 4500
KEEPALIVE = bytes(NAT_KEEPALIVE())            # RFC 3948 §2.3: the single byte 0xFF
DATA = __import__("pathlib").Path(__file__).parents[1] / "data"
CAPTURE_CLIENT = "203.0.113.1"               # the clients' address in the captures (kernel NAT's outside)


# -- IKE headers ---------------------------------------------------------------------------------------------------

IKEV2_EXCHANGES = ("IKE_SA_INIT", "IKE_AUTH", "CREATE_CHILD_SA", "INFORMATIONAL")
IKEV1_EXCHANGES = ("identity protection", "aggressive", "informational", "quick mode")


def ikev2(spi_i: bytes, spi_r: bytes = NO_SPI, exchange: str = "IKE_SA_INIT", response: bool = False,
          msg_id: int = 0) -> bytes:
    """An IKEv2 message (RFC 7296 §3.1): IKE_SA_INIT carries SA and Nonce, the others an Encrypted payload."""
    flags = "Response" if response else "Initiator"
    if exchange == "IKE_SA_INIT":
        body = (IKEv2_SA(next_payload="Nonce", prop=IKEv2_Proposal(
                    trans=IKEv2_Transform(transform_type="Encryption", transform_id=12)))
                / IKEv2_Nonce(nonce=hashlib.sha256(spi_i + spi_r).digest()))
        first = "SA"
    else:
        body = IKEv2_Encrypted(next_payload="IDi", load=hashlib.sha256(spi_i + spi_r + b"auth").digest() * 2)
        first = "Encrypted"
    return bytes(IKEv2(init_SPI=spi_i, resp_SPI=spi_r, next_payload=first, exch_type=exchange, flags=flags,
                       id=msg_id) / body)


def ikev1(cookie_i: bytes, cookie_r: bytes = NO_SPI, exchange: str = "identity protection",
          response: bool = False, msg_id: int = 0) -> bytes:
    """An IKEv1 (ISAKMP) message (RFC 2408 §3.1): the cookies stand where IKEv2's SPIs do.

    Without a responder cookie (the exchange's first message) it carries an
    SA payload; once both cookies are known the payloads are encrypted, so
    they are opaque bytes behind the header, as on the wire.
    """
    if cookie_r == NO_SPI:
        body = ISAKMP_payload_SA(prop=ISAKMP_payload_Proposal(trans=ISAKMP_payload_Transform()))
        return bytes(ISAKMP(init_cookie=cookie_i, resp_cookie=cookie_r, next_payload="SA", exch_type=exchange,
                            id=msg_id) / body)
    body = Raw(hashlib.sha256(cookie_i + cookie_r + bytes([response])).digest() * 2)
    return bytes(ISAKMP(init_cookie=cookie_i, resp_cookie=cookie_r, next_payload="Hash", exch_type=exchange,
                        flags="encryption", id=msg_id) / body)


def ike(version: int, spi_i: bytes, spi_r: bytes = NO_SPI, **kw) -> bytes:
    return ikev2(spi_i, spi_r, **kw) if version == 2 else ikev1(spi_i, spi_r, **kw)


def spi(n: int) -> bytes:
    """A distinct, non-zero 8-byte IKE SPI (or IKEv1 cookie) for test number ``n``."""
    return hashlib.sha256(b"spi%d" % n).digest()[:8]


def parse_ike(payload: bytes):
    """scapy's reading of an IKE message: ``IKEv2`` dispatches to ``ISAKMP`` for version 1."""
    return IKEv2(payload)


def ike_spis(payload: bytes) -> tuple[bytes, bytes]:
    """(initiator SPI, responder SPI) of an IKE message, as scapy reads them."""
    msg = parse_ike(payload)
    if isinstance(msg, ISAKMP):
        return msg.init_cookie, msg.resp_cookie
    return msg.init_SPI, msg.resp_SPI


def natt(ike_message: bytes) -> bytes:
    """An IKE message as sent on UDP 4500: the non-ESP marker first (RFC 3948 §2.2)."""
    return bytes(NON_ESP() / Raw(ike_message))


def unmark(payload: bytes) -> bytes:
    """The IKE message inside a NAT-T datagram, checked by scapy's NON_ESP layer."""
    layer = NON_ESP(payload)
    assert layer.non_esp == 0, "no non-ESP marker"
    return bytes(layer.payload)


# -- ESP (RFC 4303), encrypted by scapy ----------------------------------------------------------------------------

class EspSa:
    """One direction of a child SA: ``src`` encrypts, ``dst`` decrypts (tunnel mode, AES-CBC + HMAC-SHA1-96).

    The keys derive from the SPI, so both ends of a test build the same SA.
    ``seal`` gives the ESP bytes; ``nat_t`` marks an SA whose packets travel
    in UDP 4500 (RFC 3948 §2.1), which the sender (``ChildSa``) adds.
    """

    def __init__(self, spi: int, src: str, dst: str, nat_t: bool = False):
        self.spi, self.src, self.dst = spi, src, dst
        seed = spi.to_bytes(4, "big")
        self.sa = SecurityAssociation(
            ESP, spi=spi, crypt_algo="AES-CBC", crypt_key=hashlib.sha256(b"enc" + seed).digest()[:16],
            auth_algo="HMAC-SHA1-96", auth_key=hashlib.sha256(b"auth" + seed).digest()[:20],
            tunnel_header=IP(src=src, dst=dst),
            nat_t_header=UDP(sport=NATT_PORT, dport=NATT_PORT) if nat_t else None)
        self.seq = 0

    def inner(self, data: bytes = b"ping") -> IP:
        """The tunnelled datagram: between the two protected subnets."""
        return IP(src="10.1.0.1", dst="10.2.0.1") / ICMP(id=self.spi & 0xFFFF) / Raw(data)

    def seal(self, data: bytes = b"ping") -> bytes:
        """The next ESP packet (SPI, sequence number, IV, ciphertext, ICV) as bytes."""
        self.seq += 1
        return bytes(self.sa.encrypt(self.inner(data), seq_num=self.seq)[ESP])

    def open(self, esp: bytes) -> bytes:
        """Decrypt and authenticate ``esp`` (scapy raises if the ICV is wrong); return the inner ICMP data."""
        carried = IP(bytes(IP(src=self.src, dst=self.dst, proto=50) / Raw(esp)))
        return bytes(self.sa.decrypt(carried)[ICMP].payload)


def esp_spi(esp: bytes) -> int:
    return ESP(esp).spi


def esp_bytes(pkt) -> bytes:
    """The ESP packet an emitted frame carries, raw (IP protocol 50) or in UDP."""
    if UDP in pkt:
        return bytes(pkt[UDP].payload)
    return bytes(pkt[IP].payload)


# -- sending through the router ------------------------------------------------------------------------------------

def tick(r, now: float) -> None:
    """Time passes to ``now``: the neighbours answer ARP as live hosts do, then the router's timer runs."""
    for port, hosts in ((LAN, (C1, C2, C3)), (WAN, (S1, S2, GW))):
        for host in hosts:
            learn(r, port, host, now)
    r.handle_timer(now)
    r.take_outbox(LAN)
    r.take_outbox(WAN)


def datagrams(frames: list) -> list:
    """The IP datagrams among emitted frames (an ARP refresh may ride along after the cache ages)."""
    return [f for f in frames if IP in f]


def udp_out(r, client: str, gateway: str, payload: bytes, sport: int = IKE_PORT, dport: int = IKE_PORT,
            now: float = 1.0) -> list:
    """A datagram from a LAN client; what left on the WAN."""
    return datagrams(step(r, LAN, from_lan(client, gateway, UDP(sport=sport, dport=dport) / Raw(payload)), now)[WAN])


def udp_in(r, gateway: str, payload: bytes, dport: int, sport: int = IKE_PORT, now: float = 1.0) -> list:
    """A datagram from a WAN gateway to the router's address; what reached the LAN."""
    return datagrams(step(r, WAN, from_wan(gateway, UDP(sport=sport, dport=dport) / Raw(payload)), now)[LAN])


def esp_out(r, client: str, gateway: str, esp: bytes, now: float = 1.0) -> list:
    """Raw ESP (IP protocol 50) from a LAN client; what left on the WAN."""
    return datagrams(step(r, LAN, from_lan(client, gateway, Raw(esp), proto=50), now)[WAN])


def esp_in(r, gateway: str, esp: bytes, now: float = 1.0) -> list:
    return datagrams(step(r, WAN, from_wan(gateway, Raw(esp), proto=50), now)[LAN])


def payload(pkt) -> bytes:
    return bytes(pkt[UDP].payload)


class IkeClient:
    """One LAN client's IKE with one gateway, through the router: it sends, the gateway answers.

    ``outside_port`` is the port its IKE left from on the WAN (learned from
    the first datagram), ``inside_port`` the one it uses itself.
    """

    def __init__(self, r, client: str, gateway: str, version: int = 2, spi_i: bytes | None = None,
                 port: int = IKE_PORT, remote_port: int = IKE_PORT):
        self.r, self.client, self.gateway, self.version = r, client, gateway, version
        self.spi_i = spi_i or hashlib.sha256(f"{client} {gateway} v{version}".encode()).digest()[:8]
        self.spi_r = NO_SPI
        self.inside_port, self.remote_port = port, remote_port
        self.outside_port: int | None = None
        self.msg_id = 0
        self.sent = self.answered = b""
        """The last datagram payload the client sent and the gateway answered, as they left their senders."""

    def frame(self, message: bytes) -> bytes:
        return natt(message) if NATT_PORT in (self.inside_port, self.remote_port) else message

    def send(self, message: bytes | None = None, now: float = 1.0) -> list:
        """The client's next IKE message (or ``message``); the WAN frames it became."""
        if message is None:
            message = self.message(response=False)
        self.sent = self.frame(message)
        out = udp_out(self.r, self.client, self.gateway, self.sent, self.inside_port, self.remote_port, now)
        if out and self.outside_port is None:
            self.outside_port = out[0][UDP].sport
        return out

    def answer(self, spi_r: bytes | None = None, message: bytes | None = None, now: float = 1.0) -> list:
        """The gateway answers (taking ``spi_r`` as its responder SPI); the LAN frames it became."""
        if spi_r is not None:
            self.spi_r = spi_r
        if message is None:
            message = self.message(response=True)
        self.answered = self.frame(message)
        return udp_in(self.r, self.gateway, self.answered, self.outside_port, self.remote_port, now)

    def message(self, response: bool) -> bytes:
        if self.version == 2:
            exchange = "IKE_SA_INIT" if self.msg_id == 0 else "IKE_AUTH"
            msg = ikev2(self.spi_i, NO_SPI if exchange == "IKE_SA_INIT" and not response else self.spi_r,
                        exchange=exchange, response=response, msg_id=self.msg_id)
        else:
            msg = ikev1(self.spi_i, NO_SPI if self.msg_id == 0 and not response else self.spi_r,
                        response=response)
        if response:
            self.msg_id += 1
        return msg

    def float_to_natt(self) -> "IkeClient":
        """The same IKE SA moved to UDP 4500 (RFC 7296 §2.23), as a new client object on the new ports."""
        moved = IkeClient(self.r, self.client, self.gateway, self.version, self.spi_i, NATT_PORT, NATT_PORT)
        moved.spi_r, moved.msg_id = self.spi_r, max(self.msg_id, 1)
        return moved


class ChildSa:
    """A pair of child SAs (RFC 7296 §1.3) between a LAN client and a WAN gateway: ESP each way.

    Raw ESP (IP protocol 50) by default; with ``natt_port`` (the client's
    outside port for UDP 4500) ESP in UDP (RFC 3948 §2.1).  ``out`` and
    ``into`` send one packet and return what came out of the router;
    ``delivered_out`` and ``delivered_in`` check that it is one datagram
    between the right addresses and decrypt it with the receiving end's SA.
    """

    def __init__(self, r, client: str, gateway: str, spi_out: int, spi_in: int, natt_port: int | None = None):
        self.r, self.client, self.gateway = r, client, gateway
        self.natt_port = natt_port
        nat_t = natt_port is not None
        self.to_gateway = EspSa(spi_out, client, gateway, nat_t)
        self.to_client = EspSa(spi_in, gateway, client, nat_t)

    def out(self, data: bytes = b"up", now: float = 1.0) -> list:
        esp = self.to_gateway.seal(data)
        if self.natt_port is not None:
            return udp_out(self.r, self.client, self.gateway, esp, NATT_PORT, NATT_PORT, now)
        return esp_out(self.r, self.client, self.gateway, esp, now)

    def into(self, data: bytes = b"down", now: float = 1.0) -> list:
        esp = self.to_client.seal(data)
        if self.natt_port is not None:
            return udp_in(self.r, self.gateway, esp, self.natt_port, NATT_PORT, now)
        return esp_in(self.r, self.gateway, esp, now)

    def delivered_out(self, frames: list) -> bytes:
        (pkt,) = frames
        assert (pkt[IP].src, pkt[IP].dst) == (WAN_IP, self.gateway)
        if self.natt_port is not None:
            assert (pkt[UDP].sport, pkt[UDP].dport) == (self.natt_port, NATT_PORT)
        return self.to_gateway.open(esp_bytes(pkt))

    def delivered_in(self, frames: list) -> bytes:
        (pkt,) = frames
        assert (pkt[IP].src, pkt[IP].dst) == (self.gateway, self.client)
        if self.natt_port is not None:
            assert (pkt[UDP].sport, pkt[UDP].dport) == (NATT_PORT, NATT_PORT)
        return self.to_client.open(esp_bytes(pkt))

    def up(self, now: float = 1.0) -> "ChildSa":
        """One packet each way, the client's first; both must arrive intact."""
        assert self.delivered_out(self.out(now=now)) == b"up"
        assert self.delivered_in(self.into(now=now)) == b"down"
        return self


def fragments(pkt: Ether, size: int) -> list[Ether]:
    """``pkt`` cut into IP fragments of at most ``size`` payload bytes by scapy, each in ``pkt``'s Ethernet header."""
    from scapy.layers.inet import fragment
    ether = pkt[Ether]
    return [Ether(src=ether.src, dst=ether.dst) / piece for piece in fragment(pkt[IP], fragsize=size)]


def reassemble(pieces: list) -> bytes:
    """The IP payload of a datagram from its emitted fragments (any order)."""
    data = bytearray()
    for p in sorted(pieces, key=lambda p: p[IP].frag):
        assert p[IP].frag * 8 == len(data), "a hole between fragments"
        data += bytes(p[IP].payload)[:p[IP].len - p[IP].ihl * 4]
    return bytes(data)


def capture(name: str) -> list:
    """The IP packets of a capture in tests/data, in order."""
    return [p for p in rdpcap(str(DATA / name)) if IP in p]


def conversation(packets: list, client_port: int | None = None) -> list[tuple[bool, int, int, bytes]]:
    """(from the client?, source port, destination port, payload) of a capture's UDP datagrams."""
    out = []
    for p in packets:
        if UDP not in p:
            continue
        mine = p[IP].src == CAPTURE_CLIENT
        port = p[UDP].sport if mine else p[UDP].dport
        if client_port is None or port == client_port:
            out.append((mine, p[UDP].sport, p[UDP].dport, bytes(p[UDP].payload)))
    return out

