"""L2TP load for `make bench`: `python -m tests.perf.l2tp_load lns|lac ...`.

    lns SECONDS                 on UDP 1701: answer each SCCRQ with an SCCRP, count marked data messages
    lac SERVER SECONDS N        on UDP 1701: open N tunnels (SCCRQ, await SCCRP), then send data messages
                                round-robin over them; print how many were sent

Both print "ready" once their socket is bound; `lns` prints its count at SIGTERM or after SECONDS.
The tunnels are real as far as the router can tell (RFC 2661 §3.1, §6.1-6.2): the router's L2TP helper
tracks them and demultiplexes by Tunnel ID.  Data frames are 64 bytes on the wire:
14 Ethernet + 20 IP + 8 UDP + 6 L2TP (flags/version, Tunnel ID, Session ID) + 16 payload.
"""

from __future__ import annotations

import signal
import socket
import struct
import sys
import time

PORT = 1701
MARKER = b"VRBENCH"
PAYLOAD = MARKER + bytes(16 - len(MARKER))
DATA = struct.Struct("!HHH")          # flags/version (data, no length), Tunnel ID, Session ID
CONTROL = struct.Struct("!HHHHHH")    # flags/version, length, Tunnel ID, Session ID, Ns, Nr
AVP16 = struct.Struct("!HHHH")        # M bit and length 8, vendor 0, attribute type, 16-bit value
SCCRQ, SCCRP, ASSIGNED_TUNNEL_ID, MESSAGE_TYPE = 1, 2, 9, 0
LNS_FIRST_ID = 1000


def control(tunnel_id: int, message_type: int, assigned: int) -> bytes:
    avps = AVP16.pack(0x8008, 0, MESSAGE_TYPE, message_type) + AVP16.pack(0x8008, 0, ASSIGNED_TUNNEL_ID, assigned)
    return CONTROL.pack(0xC802, CONTROL.size + len(avps), tunnel_id, 0, 0, 0) + avps


def _socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
    sock.bind(("0.0.0.0", PORT))
    return sock


def lns(seconds: str) -> None:
    sock = _socket()
    count, next_id = 0, LNS_FIRST_ID
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    sock.settimeout(0.2)
    print("ready", flush=True)
    end = time.monotonic() + float(seconds)
    while not stop[0] and time.monotonic() < end:
        try:
            data, addr = sock.recvfrom(2048)
        except (socket.timeout, InterruptedError):
            continue
        if data[:1] == b"\xc8" and len(data) >= 28 and struct.unpack_from("!H", data, 18)[0] == SCCRQ:
            peer = struct.unpack_from("!H", data, 26)[0]      # the LAC's Assigned Tunnel ID
            sock.sendto(control(peer, SCCRP, next_id), addr)
            next_id += 1
        elif data.endswith(PAYLOAD):
            count += 1
    print(count, flush=True)


def lac(server: str, seconds: str, n: str) -> None:
    sock = _socket()
    sock.settimeout(2.0)
    print("ready", flush=True)
    peers: dict[int, int] = {}
    for attempt in range(5):
        for own in range(1, int(n) + 1):
            if own not in peers:
                sock.sendto(control(0, SCCRQ, own), (server, PORT))
        try:
            while len(peers) < int(n):
                data, _ = sock.recvfrom(2048)
                if len(data) >= 28 and struct.unpack_from("!H", data, 18)[0] == SCCRP:
                    peers[struct.unpack_from("!H", data, 4)[0]] = struct.unpack_from("!H", data, 26)[0]
        except socket.timeout:
            continue
        break
    if len(peers) < int(n):
        sys.exit(f"only {len(peers)} of {n} tunnels answered")
    frames = [DATA.pack(0x0002, lns_id, 1) + PAYLOAD for lns_id in peers.values()]
    sent, count, sendto, target = 0, len(frames), sock.sendto, (server, PORT)
    end = time.monotonic() + float(seconds)
    while time.monotonic() < end:
        for _ in range(64):
            try:
                sendto(frames[sent % count], target)
                sent += 1
            except BlockingIOError:
                break
    print(sent, flush=True)


ROLES = {"lns": lns, "lac": lac}

if __name__ == "__main__":
    ROLES[sys.argv[1]](*sys.argv[2:])
