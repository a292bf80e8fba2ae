"""Synthetic raw-ESP peers (IP protocol 50) for the lab: `python -m tests.integration.esp_peers ROLE ...`.

The kernel here has no ESP, so these speak ESP over raw sockets.  Every
packet is real ESP (RFC 4303) made by scapy's ``SecurityAssociation``:
AES-CBC with HMAC-SHA1-96, keys derived from the SPI (``keys(spi)``), so any
peer can check the integrity of what it receives and read the payload.

    client GATEWAY SPI       send ESP with SPI to GATEWAY; commands on stdin, one a line:
                                 send N    send N packets (payload "c<SPI>:<seq>")
                                 count     print how many decryptable ESP packets arrived
                                 report    print a JSON report and exit
    responder PAIRS...       PAIRS are CLIENT_SPI:REPLY_SPI (hex); answer every ESP packet with
                             SPI CLIENT_SPI, to its source, with ESP of SPI REPLY_SPI whose payload names
                             the packet answered; `report` on stdin prints a JSON report and exits

Both print "ready" once their raw socket is open.  A report:
``{"received": {spi_hex: count}, "payloads": {spi_hex: [payload, ...]}, "bad": n}`` where ``bad``
counts ESP that would not decrypt or verify.
"""

from __future__ import annotations

import hashlib
import json
import socket
import sys
import threading

from scapy.layers.inet import IP, UDP
from scapy.layers.ipsec import ESP, SecurityAssociation
from scapy.packet import Raw

IPPROTO_ESP = 50


def keys(spi: int) -> tuple[bytes, bytes]:
    digest = hashlib.sha256(b"vpnrouter-esp-lab:%08x" % spi).digest()
    return digest[:16], digest[16:] + digest[:4]


def security_association(spi: int) -> SecurityAssociation:
    crypt_key, auth_key = keys(spi)
    return SecurityAssociation(ESP, spi=spi, crypt_algo="AES-CBC", crypt_key=crypt_key,
                               auth_algo="HMAC-SHA1-96", auth_key=auth_key)


class Peer:
    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_ESP)
        self.lock = threading.Lock()
        self.received: dict[str, int] = {}
        self.payloads: dict[str, list[str]] = {}
        self.bad = 0
        self.outbound: dict[int, SecurityAssociation] = {}

    def send(self, spi: int, src: str, dst: str, payload: bytes) -> None:
        sa = self.outbound.setdefault(spi, security_association(spi))
        packet = sa.encrypt(IP(src=src, dst=dst) / UDP(sport=4242, dport=4242) / Raw(payload))
        self.sock.sendto(bytes(packet[ESP]), (dst, 0))

    def receive_loop(self, on_packet) -> None:
        while True:
            data, (src, _) = self.sock.recvfrom(65535)
            packet = IP(data)
            if ESP not in packet or len(bytes(packet[ESP])) < 8:
                continue
            spi = packet[ESP].spi
            try:
                inner = security_association(spi).decrypt(packet)
                payload = bytes(inner[Raw].load) if Raw in inner else b""
            except Exception:
                with self.lock:
                    self.bad += 1
                continue
            key = f"{spi:08x}"
            with self.lock:
                self.received[key] = self.received.get(key, 0) + 1
                self.payloads.setdefault(key, []).append(payload.decode(errors="replace"))
            on_packet(spi, src, payload)

    def report(self) -> str:
        with self.lock:
            return json.dumps({"received": self.received, "payloads": self.payloads, "bad": self.bad})

    def count(self) -> int:
        with self.lock:
            return sum(self.received.values())


def _source_for(dst: str) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((dst, 9))
        return s.getsockname()[0]


def client(gateway: str, spi_hex: str) -> None:
    spi = int(spi_hex, 16)
    peer = Peer()
    src = _source_for(gateway)
    threading.Thread(target=peer.receive_loop, args=(lambda *a: None,), daemon=True).start()
    print("ready", flush=True)
    seq = 0
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "send":
            for _ in range(int(words[1])):
                seq += 1
                peer.send(spi, src, gateway, f"c{spi:08x}:{seq}".encode())
            print("sent", seq, flush=True)
        elif words[0] == "count":
            print(peer.count(), flush=True)
        elif words[0] == "report":
            break
    print(peer.report(), flush=True)


def responder(*pairs: str) -> None:
    replies = {int(a, 16): int(b, 16) for a, b in (p.split(":") for p in pairs)}
    peer = Peer()

    def answer(spi: int, src: str, payload: bytes) -> None:
        if spi in replies:
            peer.send(replies[spi], _source_for(src), src, b"reply:" + payload)

    threading.Thread(target=peer.receive_loop, args=(answer,), daemon=True).start()
    print("ready", flush=True)
    for line in sys.stdin:
        if line.split()[:1] == ["count"]:
            print(peer.count(), flush=True)
        elif line.split()[:1] == ["report"]:
            break
    print(peer.report(), flush=True)


ROLES = {"client": client, "responder": responder}

if __name__ == "__main__":
    ROLES[sys.argv[1]](*sys.argv[2:])
