"""IPsec load for `make bench`: `python -m tests.perf.esp_load send|count esp|natt ...`.

    send esp SERVER SECONDS N [NS,NS,...]   raw ESP (IP protocol 50) round-robin over N SPIs
    send natt SERVER SECONDS N              ESP in UDP (RFC 3948) to SERVER:4500 round-robin from N source ports
    count esp SECONDS                       count marked raw ESP received; prints the count
    count natt SECONDS                      count marked datagrams received on UDP 4500; prints the count

`count` prints "ready" once its socket is open, and stops after SECONDS or at
SIGTERM or SIGINT, whichever comes first (the bench stops it once the sender is
done).

`send` prints the number of packets it handed to the kernel.  With namespaces
(names under /run/netns) the raw ESP sockets are opened in each of them in
turn, the SPIs dealt round-robin, so that one process sends from several
clients.  Each packet is an ESP header (non-zero SPI, sequence number) then a
marker, so the counter ignores anything else.  Frames are 64 bytes on the wire:
    ESP:   14 Ethernet + 20 IP + 8 ESP (SPI, sequence) + 22 payload
    NAT-T: 14 Ethernet + 20 IP + 8 UDP + 8 ESP (SPI, sequence) + 14 payload
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import struct
import sys
import time

IPPROTO_ESP = 50
NATT_PORT = 4500
FIRST_SPORT = 34500         # NAT-T source ports: FIRST_SPORT .. FIRST_SPORT + N - 1
# SPIs: FIRST_SPI[kind] .. + N - 1; never 0 nor below 256 (RFC 4303 reserves those), and different for raw ESP
# and NAT-T, as a gateway's SPIs are: the two runs share a router, so they must not look like the same SAs.
FIRST_SPI = {"esp": 0xC0DE0001, "natt": 0xC0DE1001}
MARKER = b"VRBENCH"
ESP = struct.Struct("!II")  # SPI, sequence number
ESP_PAYLOAD = 22
NATT_PAYLOAD = 14
CLONE_NEWNET = 0x40000000


def packets(kind: str, n: int) -> list[bytes]:
    payload = ESP_PAYLOAD if kind == "esp" else NATT_PAYLOAD
    body = MARKER + bytes(payload - len(MARKER))
    return [ESP.pack(FIRST_SPI[kind] + i, 1) + body for i in range(n)]


def _setns(fd: int, what: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns {what}: {os.strerror(err)}")


def _esp_sockets(server: str, namespaces: list[str]) -> list[socket.socket]:
    """One raw ESP socket connected to the server: here, or in each of the namespaces."""
    def opened() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_ESP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
        sock.connect((server, 0))
        return sock

    if not namespaces:
        return [opened()]
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    socks = []
    try:
        for name in namespaces:
            fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
            try:
                _setns(fd, name)
            finally:
                os.close(fd)
            socks.append(opened())   # a socket stays in the namespace it was made in
    finally:
        _setns(home, "back")
        os.close(home)
    return socks


def _natt_sockets(server: str, n: int) -> list[socket.socket]:
    socks = []
    for i in range(n):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
        sock.bind(("0.0.0.0", FIRST_SPORT + i))
        sock.connect((server, NATT_PORT))
        socks.append(sock)
    return socks


def send(kind: str, server: str, seconds: str, n: str, namespaces: str = "") -> None:
    n = int(n)
    if kind == "esp":
        socks = _esp_sockets(server, [ns for ns in namespaces.split(",") if ns])
    else:
        socks = _natt_sockets(server, n)
    frames = packets(kind, n)
    # Round-robin over the associations: packet i goes with SPI i % n, from socket i % len(socks).
    sends = [(socks[i % len(socks)].send, frames[i]) for i in range(n)]
    end = time.monotonic() + float(seconds)
    sent = 0
    monotonic = time.monotonic
    while monotonic() < end:
        for _ in range(16):
            for fn, frame in sends:
                try:
                    fn(frame)
                    sent += 1
                except OSError:   # ENOBUFS under load, or ECONNREFUSED from an ICMP error: go on
                    pass
    print(sent)


class _Stop(Exception):
    pass


def _stop(signum, frame):
    raise _Stop


def count(kind: str, seconds: str) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):   # also when started with SIGINT ignored (a background job)
        signal.signal(sig, _stop)
    if kind == "esp":
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_ESP)
        at = 20 + ESP.size   # a raw socket gets the IP header (no options here)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("0.0.0.0", NATT_PORT))
        at = ESP.size
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
    sock.settimeout(0.5)
    end_marker = at + len(MARKER)
    print("ready", flush=True)
    end = time.monotonic() + float(seconds)
    received = 0
    recv = sock.recv
    try:
        while time.monotonic() < end:
            try:
                for _ in range(64):
                    if recv(2048)[at:end_marker] == MARKER:
                        received += 1
            except socket.timeout:
                continue
    except _Stop:
        pass
    print(received, flush=True)


if __name__ == "__main__":
    {"send": send, "count": count}[sys.argv[1]](*sys.argv[2:])
