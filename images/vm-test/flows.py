#!/usr/bin/python3
"""A host's end of the test flows through the router (images/vm-test/state.sh): one UDP socket and TCP connections.

    flows.py --udp ADDR:PORT [--udp-peer ADDR:PORT] [--tcp-listen ADDR:PORT] [--tcp-connect ADDR:PORT] --log FILE

Runs until killed. Every message it receives is one line in FILE, "<udp|tcp> <peer> <message>", flushed at once.
It answers "ping N" with "pong N" and "push N" with "ack N", to whoever sent it. SIGUSR2 sends "ping N", SIGUSR1
sends "push N" (N counts up per process): by UDP to the UDP peer (--udp-peer, else the latest UDP sender), and
on every TCP connection. Lines "sent ..." and "connected ..." go to FILE too. Messages are one UDP datagram or
one TCP line each.
"""

from __future__ import annotations

import argparse
import selectors
import signal
import socket
import sys
import time


def address(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--udp", type=address, required=True)
    parser.add_argument("--udp-peer", type=address)
    parser.add_argument("--tcp-listen", type=address)
    parser.add_argument("--tcp-connect", type=address)
    parser.add_argument("--log", required=True)
    args = parser.parse_args()
    log = open(args.log, "a", buffering=1)

    def note(line: str) -> None:
        log.write(f"{time.time():.3f} {line}\n")

    wanted: list[str] = []
    signal.signal(signal.SIGUSR1, lambda *_: wanted.append("push"))
    signal.signal(signal.SIGUSR2, lambda *_: wanted.append("ping"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    sel = selectors.DefaultSelector()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(args.udp)
    sel.register(udp, selectors.EVENT_READ, "udp")
    udp_peer = args.udp_peer
    conns: dict[socket.socket, tuple[str, bytearray]] = {}

    if args.tcp_listen:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(args.tcp_listen)
        listener.listen()
        sel.register(listener, selectors.EVENT_READ, "listen")
    if args.tcp_connect:
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = socket.create_connection(args.tcp_connect, timeout=5)
                break
            except OSError as exc:
                if time.monotonic() > deadline:
                    note(f"error connecting to {args.tcp_connect}: {exc}")
                    return 1
                time.sleep(0.5)
        conn.setblocking(False)
        peer = "%s:%d" % conn.getpeername()
        local = "%s:%d" % conn.getsockname()
        note(f"connected tcp {local} -> {peer}")
        conns[conn] = (peer, bytearray())
        sel.register(conn, selectors.EVENT_READ, "tcp")
    print("ready", flush=True)

    counter = 0

    def answer(message: str) -> str | None:
        word, _, n = message.partition(" ")
        return {"ping": f"pong {n}", "push": f"ack {n}"}.get(word)

    def send_tcp(conn: socket.socket, message: str) -> None:
        try:
            conn.sendall(message.encode() + b"\n")
            note(f"sent tcp {conns[conn][0]} {message}")
        except OSError as exc:
            note(f"error tcp {conns[conn][0]} {exc}")

    while True:
        while wanted:
            counter += 1
            message = f"{wanted.pop(0)} {counter}"
            if udp_peer:
                udp.sendto(message.encode(), udp_peer)
                note(f"sent udp {udp_peer[0]}:{udp_peer[1]} {message}")
            for conn in list(conns):
                send_tcp(conn, message)
        for key, _ in sel.select(timeout=0.2):
            kind, sock = key.data, key.fileobj
            if kind == "udp":
                data, sender = sock.recvfrom(65535)
                message = data.decode(errors="replace")
                note(f"udp {sender[0]}:{sender[1]} {message}")
                if args.udp_peer is None:
                    udp_peer = sender
                reply = answer(message)
                if reply:
                    sock.sendto(reply.encode(), sender)
                    note(f"sent udp {sender[0]}:{sender[1]} {reply}")
            elif kind == "listen":
                conn, sender = sock.accept()
                conn.setblocking(False)
                conns[conn] = ("%s:%d" % sender, bytearray())
                note(f"accepted tcp {conns[conn][0]}")
                sel.register(conn, selectors.EVENT_READ, "tcp")
            else:
                peer, buffer = conns[sock]
                try:
                    data = sock.recv(65535)
                except OSError as exc:
                    data = b""
                    note(f"error tcp {peer} {exc}")
                if not data:
                    note(f"closed tcp {peer}")
                    sel.unregister(sock)
                    del conns[sock]
                    sock.close()
                    continue
                buffer += data
                while b"\n" in buffer:
                    line, _, rest = bytes(buffer).partition(b"\n")
                    buffer[:] = rest
                    message = line.decode(errors="replace")
                    note(f"tcp {peer} {message}")
                    reply = answer(message)
                    if reply:
                        send_tcp(sock, reply)


if __name__ == "__main__":
    sys.exit(main())
