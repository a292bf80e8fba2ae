"""GRE load for `make bench`: `python -m tests.perf.gre_load send|count ...`.

    send SERVER SECONDS CALL_ID[,CALL_ID...]   send GRE v1 (PPTP) packets round-robin over the calls
    count SECONDS                               count marked GRE packets received; prints the count

Packets carry a marker so the counter ignores the calls' own PPP keepalives.
Frames are 64 bytes on the wire: 14 Ethernet + 20 IP + 12 GRE (key, sequence) + 18 payload.
"""

from __future__ import annotations

import socket
import struct
import sys
import time

MARKER = b"VRBENCH"
PAYLOAD = MARKER + bytes(18 - len(MARKER))
GRE = struct.Struct("!HHHHI")   # flags/version, protocol, payload length, call ID, sequence


def send(server: str, seconds: str, call_ids: str) -> None:
    ids = [int(c) for c in call_ids.split(",")]
    packets = [GRE.pack(0x3001, 0x880B, len(PAYLOAD), cid, 1) + PAYLOAD for cid in ids]
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_GRE)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
    end = time.monotonic() + float(seconds)
    sent, n = 0, len(packets)
    sendto, target = sock.sendto, (server, 0)
    while time.monotonic() < end:
        for _ in range(256):
            try:
                sendto(packets[sent % n], target)
                sent += 1
            except BlockingIOError:
                pass
            except OSError:   # ENOBUFS under load: the kernel's queue is full, go on
                pass
    print(sent)


def count(seconds: str) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_GRE)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
    sock.settimeout(0.5)
    print("ready", flush=True)
    end = time.monotonic() + float(seconds)
    received = 0
    while time.monotonic() < end:
        try:
            data = sock.recv(2048)
        except socket.timeout:
            continue
        if MARKER in data[20:]:
            received += 1
    print(received)


if __name__ == "__main__":
    {"send": send, "count": count}[sys.argv[1]](*sys.argv[2:])
