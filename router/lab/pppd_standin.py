"""A stand-in for pppd that speaks LCP, for kernels without PPP (see ../shared/REFERENCE.md).

Real PPTP and L2TP daemons start ``pppd`` on a tty and exchange async-HDLC
framed PPP with it (RFC 1662 §4: flag 0x7E, escape 0x7D, FCS-16).  This
program does the LCP part of RFC 1661 on its standard input and output:
it sends Configure-Requests until one is acknowledged, acknowledges the
peer's, answers Echo-Requests, and once LCP is open sends an Echo-Request
every half second so that PPP keeps crossing the tunnel both ways.

Every frame it receives is logged as a JSON line to
``$VPNROUTER_PPP_LOG/ppp-<pid>.log`` (when that variable is set), so a test
can assert that PPP crossed GRE or L2TP in both directions.

    pppd_standin.py [pppd arguments, ignored]
    pppd_standin.py --spawn PROGRAM [ARGS...]   run PROGRAM with its stdin/stdout as our line
"""

from __future__ import annotations

import json
import os
import select
import socket
import struct
import subprocess
import sys
import time
import tty

FLAG, ESCAPE = 0x7E, 0x7D
LCP = 0xC021
CONF_REQ, CONF_ACK, CONF_NAK, CONF_REJ, TERM_REQ, TERM_ACK, CODE_REJ, PROTO_REJ, ECHO_REQ, ECHO_REP = range(1, 11)


def _fcs_table() -> list[int]:
    table = []
    for b in range(256):
        v = b
        for _ in range(8):
            v = (v >> 1) ^ 0x8408 if v & 1 else v >> 1
        table.append(v)
    return table


FCS_TABLE = _fcs_table()


def fcs16(data: bytes) -> int:
    """RFC 1662 §C.2 FCS-16."""
    fcs = 0xFFFF
    for b in data:
        fcs = (fcs >> 8) ^ FCS_TABLE[(fcs ^ b) & 0xFF]
    return fcs


def frame(protocol: int, payload: bytes) -> bytes:
    """An async-HDLC frame: address, control, protocol, payload, FCS, escaped and flagged (RFC 1662 §4)."""
    body = b"\xff\x03" + struct.pack("!H", protocol) + payload
    body += struct.pack("<H", fcs16(body) ^ 0xFFFF)
    out = bytearray([FLAG])
    for b in body:
        if b in (FLAG, ESCAPE) or b < 0x20:
            out += bytes([ESCAPE, b ^ 0x20])
        else:
            out.append(b)
    out.append(FLAG)
    return bytes(out)


class Deframer:
    def __init__(self) -> None:
        self.buf = bytearray()
        self.escaped = False
        self.bad = 0

    def feed(self, data: bytes) -> list[bytes]:
        frames = []
        for b in data:
            if b == FLAG:
                if len(self.buf) >= 4:
                    if fcs16(bytes(self.buf)) == 0xF0B8:   # RFC 1662 §C.2: good final FCS
                        frames.append(bytes(self.buf[:-2]))
                    else:
                        self.bad += 1
                self.buf.clear()
                self.escaped = False
            elif b == ESCAPE:
                self.escaped = True
            else:
                self.buf.append(b ^ 0x20 if self.escaped else b)
                self.escaped = False
        return frames


def lcp(code: int, ident: int, data: bytes = b"") -> bytes:
    return frame(LCP, struct.pack("!BBH", code, ident, 4 + len(data)) + data)


class Lcp:
    """Just enough of the LCP automaton (RFC 1661 §4) to open the link and keep it busy."""

    def __init__(self, write, log) -> None:
        self.write, self.log = write, log
        self.magic = struct.unpack("!I", os.urandom(4))[0] or 1
        self.ident = 0
        self.acked_ours = self.acked_theirs = False
        self.next_send = 0.0

    def tick(self, now: float) -> None:
        if now < self.next_send:
            return
        self.ident = (self.ident + 1) & 0xFF
        if not self.acked_ours:
            option = struct.pack("!BBI", 5, 6, self.magic)   # Magic-Number (RFC 1661 §6.4)
            self.write(lcp(CONF_REQ, self.ident, option))
            self.next_send = now + 1.0
        elif self.acked_theirs:
            self.write(lcp(ECHO_REQ, self.ident, struct.pack("!I", self.magic) + b"vpnrouter"))
            self.next_send = now + 0.5
        else:
            self.next_send = now + 0.5

    def receive(self, data: bytes) -> None:
        if len(data) < 4:
            return
        protocol = struct.unpack("!H", data[2:4])[0]
        if protocol != LCP or len(data) < 8:
            self.log({"protocol": protocol, "len": len(data)})
            return
        code, ident, length = struct.unpack("!BBH", data[4:8])
        body = data[8:4 + length]
        self.log({"protocol": protocol, "code": code, "id": ident})
        if code == CONF_REQ:
            self.write(lcp(CONF_ACK, ident, body))
            self.acked_theirs = True
        elif code == CONF_ACK:
            self.acked_ours = True
        elif code == ECHO_REQ:
            self.write(lcp(ECHO_REP, ident, struct.pack("!I", self.magic) + body[4:]))
        elif code == TERM_REQ:
            self.write(lcp(TERM_ACK, ident))


def serve(fd_in: int, fd_out: int, child: subprocess.Popen | None = None) -> None:
    log_dir = os.environ.get("VPNROUTER_PPP_LOG")
    log_file = open(os.path.join(log_dir, f"ppp-{os.getpid()}.log"), "a", buffering=1) if log_dir else None

    def log(entry: dict) -> None:
        if log_file:
            log_file.write(json.dumps({"t": round(time.time(), 3), **entry}) + "\n")

    def write(data: bytes) -> None:
        os.write(fd_out, data)

    link = Lcp(write, log)
    deframer = Deframer()
    while child is None or child.poll() is None:
        link.tick(time.monotonic())
        ready, _, _ = select.select([fd_in], [], [], 0.1)
        if ready:
            data = os.read(fd_in, 65536)
            if not data:
                break
            for payload in deframer.feed(data):
                link.receive(payload)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--spawn"]:
        ours, theirs = socket.socketpair()
        child = subprocess.Popen(argv[1:], stdin=theirs, stdout=theirs)
        theirs.close()
        try:
            serve(ours.fileno(), ours.fileno(), child)
        finally:
            if child.poll() is None:
                child.terminate()
        return 0
    if os.isatty(0):
        tty.setraw(0)   # as pppd does: no echo, no line editing, all 8 bits
    serve(0, 1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
