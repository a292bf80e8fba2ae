"""Synthetic raw-ESP peers (IP protocol 50) for ``lab check``: `python -m router.lab.esp ROLE ...`.

No real client here sends ESP through a NAT without UDP encapsulation
(strongSwan always uses NAT-T behind one), so ``lab check`` tries raw ESP
with these.  A packet is ESP's header (RFC 4303 §2: SPI, sequence number)
and an opaque payload; nothing is encrypted, since a NAT reads only the SPI.

    responder             answer every ESP packet, to its source, with SPI + 1 and the same sequence number
    client GATEWAY SPI N  send N packets with SPI to GATEWAY, 50 ms apart; print how many answers came back
                          (SPI + 1) within a second of the last one

Both run in the lab's namespaces (``ip netns exec``).
"""

from __future__ import annotations

import select
import socket
import struct
import sys
import time

IPPROTO_ESP = 50
HEADER = struct.Struct("!II")


def _socket() -> socket.socket:
    return socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_ESP)


def _esp(data: bytes) -> tuple[int, int] | None:
    """(SPI, sequence number) of a raw socket's datagram (it includes the IP header)."""
    ihl = (data[0] & 15) * 4 if data else 0
    if len(data) < ihl + HEADER.size:
        return None
    return HEADER.unpack_from(data, ihl)


def responder() -> None:
    sock = _socket()
    print("ready", flush=True)
    while True:
        data, (src, _) = sock.recvfrom(65535)
        esp = _esp(data)
        if esp is not None and esp[0] % 2 == 0:      # clients use even SPIs; our answers are odd
            sock.sendto(HEADER.pack(esp[0] + 1, esp[1]) + b"synthetic-esp-reply", (src, 0))


def client(gateway: str, spi: int, count: int) -> int:
    sock = _socket()
    answers = 0
    for seq in range(1, count + 1):
        sock.sendto(HEADER.pack(spi, seq) + b"synthetic-esp", (gateway, 0))
        answers += _drain(sock, spi + 1, time.monotonic() + 0.05)
    answers += _drain(sock, spi + 1, time.monotonic() + 1.0)
    return answers


def _drain(sock: socket.socket, reply_spi: int, until: float) -> int:
    got = 0
    while (left := until - time.monotonic()) > 0:
        ready, _, _ = select.select([sock], [], [], left)
        if not ready:
            break
        esp = _esp(sock.recv(65535))
        if esp is not None and esp[0] == reply_spi:
            got += 1
    return got


def main(argv: list[str]) -> int:
    if argv[:1] == ["responder"]:
        responder()
        return 0
    if len(argv) == 4 and argv[0] == "client":
        print(client(argv[1], int(argv[2], 0), int(argv[3])), flush=True)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
