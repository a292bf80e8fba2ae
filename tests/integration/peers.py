"""Small programs run inside the lab's namespaces: `python -m tests.integration.peers ROLE ...`.

    serve-tcp PORT SIZE SEED [COUNT]   send SIZE seeded random bytes to each of COUNT connections, then exit
    fetch-tcp HOST PORT [RATE]         print "<bytes> <sha256>" of what the server sent (read at RATE bytes/s)
    udp-echo PORT COUNT                echo COUNT datagrams back to their sender
    udp-ask HOST PORT [SPORT]          send one datagram (from SPORT), print the reply, or "refused" / "timeout"
    udp-listen PORT SECONDS            print every datagram received for SECONDS
    udp-flood HOST PORT COUNT          COUNT datagrams from as many source ports, as fast as it can; print COUNT
"""

from __future__ import annotations

import hashlib
import random
import socket
import sys
import time


def payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def serve_tcp(port: str, size: str, seed: str, count: str = "1") -> None:
    data = payload(int(size), int(seed))
    with socket.create_server(("0.0.0.0", int(port)), reuse_port=True) as server:
        server.settimeout(60)
        print("ready", flush=True)
        for _ in range(int(count)):
            conn, _ = server.accept()
            with conn:
                conn.sendall(data)


def fetch_tcp(host: str, port: str, rate: str = "0") -> None:
    digest, total = hashlib.sha256(), 0
    pause = 65536 / int(rate) if int(rate) else 0
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        while chunk := conn.recv(1 << 16):
            digest.update(chunk)
            total += len(chunk)
            if pause:
                time.sleep(pause * len(chunk) / 65536)
    print(total, digest.hexdigest())


def udp_echo(port: str, count: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("0.0.0.0", int(port)))
        s.settimeout(30)
        print("ready", flush=True)
        for _ in range(int(count)):
            data, addr = s.recvfrom(65535)
            s.sendto(b"echo:" + data + f":{addr[0]}".encode(), addr)


def udp_ask(host: str, port: str, sport: str = "0") -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", int(sport)))
        s.connect((host, int(port)))
        s.settimeout(3)
        s.send(b"hello")
        try:
            print(s.recv(65535).decode())
        except ConnectionRefusedError:
            print("refused")
        except socket.timeout:
            print("timeout")


def udp_flood(host: str, port: str, count: str) -> None:
    """New flows as fast as one host can open them: each datagram from the next source port (the kernel's
    ephemeral range and beyond, wrapping), through a raw socket so that no port has to be bound."""
    import struct
    from router.packet.checksum import internet_checksum
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((host, int(port)))
        me = probe.getsockname()[0]
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    addresses = socket.inet_aton(me) + socket.inet_aton(host)
    for i in range(int(count)):
        udp = struct.pack("!HHHH", 1024 + i % 64000, int(port), 13, 0) + b"flood"
        header = struct.pack("!BBHHHBBH8s", 0x45, 0, 33, i & 0xFFFF, 0, 64, 17, 0, addresses)
        raw.sendto(header[:10] + struct.pack("!H", internet_checksum(header)) + header[12:] + udp, (host, 0))
    print(count)


def udp_listen(port: str, seconds: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("0.0.0.0", int(port)))
        s.settimeout(float(seconds))
        print("ready", flush=True)
        try:
            while True:
                data, addr = s.recvfrom(65535)
                print("got", addr[0], data, flush=True)
        except socket.timeout:
            pass


ROLES = {"serve-tcp": serve_tcp, "fetch-tcp": fetch_tcp, "udp-echo": udp_echo, "udp-ask": udp_ask,
         "udp-listen": udp_listen, "udp-flood": udp_flood}

if __name__ == "__main__":
    ROLES[sys.argv[1]](*sys.argv[2:])
