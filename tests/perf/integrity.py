"""`make bench`'s correctness checks, run in the lab's namespaces: `python -m tests.perf.integrity ROLE ...`.

    tcp-sink PORT                  accept one connection, print the sha256 and length of all it received
    tcp-source HOST PORT MB        send MB mebibytes of seeded pseudo-random data, print their sha256 and length
    udp-sink PORT SECONDS          print how many numbered datagrams arrived, how many out of order, the highest
    udp-source HOST PORT COUNT     send COUNT datagrams numbered 0.. as fast as the socket takes them

A forwarder that batches may reorder; one that rewrites in place may corrupt:
the first pair compares the bytes end to end (the TCP checksum alone lets a
wrongly updated segment through only if the update is wrong in the same way
as the checksum), the second counts datagrams that arrive after a higher
number did.
"""

from __future__ import annotations

import hashlib
import json
import random
import socket
import struct
import sys
import time

CHUNK = 1 << 16


def tcp_sink(port: str) -> None:
    with socket.create_server(("", int(port))) as server:
        print("ready", flush=True)
        conn, _ = server.accept()
        digest, size = hashlib.sha256(), 0
        with conn:
            while data := conn.recv(CHUNK):
                digest.update(data)
                size += len(data)
    print(json.dumps({"sha256": digest.hexdigest(), "bytes": size}), flush=True)


def tcp_source(host: str, port: str, mebibytes: str) -> None:
    rng = random.Random(4787)
    digest, size = hashlib.sha256(), 0
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        for _ in range(int(mebibytes) * 16):
            block = rng.randbytes(CHUNK)
            conn.sendall(block)
            digest.update(block)
            size += len(block)
    print(json.dumps({"sha256": digest.hexdigest(), "bytes": size}), flush=True)


def udp_sink(port: str, seconds: str) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    sock.bind(("", int(port)))
    sock.settimeout(0.5)
    print("ready", flush=True)
    received = out_of_order = 0
    highest = -1
    deadline = time.monotonic() + float(seconds)
    while time.monotonic() < deadline:
        try:
            data = sock.recv(2048)
        except socket.timeout:
            if received:
                break
            continue
        number = struct.unpack_from("!I", data)[0]
        received += 1
        if number < highest:
            out_of_order += 1
        highest = max(highest, number)
    print(json.dumps({"received": received, "out_of_order": out_of_order, "highest": highest}), flush=True)


def udp_source(host: str, port: str, count: str) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pad = bytes(28)
    for number in range(int(count)):
        while True:
            try:
                sock.sendto(struct.pack("!I", number) + pad, (host, int(port)))
                break
            except BlockingIOError:
                time.sleep(0.0001)
    print(json.dumps({"sent": int(count)}), flush=True)


ROLES = {"tcp-sink": tcp_sink, "tcp-source": tcp_source, "udp-sink": udp_sink, "udp-source": udp_source}

if __name__ == "__main__":
    ROLES[sys.argv[1]](*sys.argv[2:])
