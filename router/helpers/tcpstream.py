"""Following one direction of a TCP byte stream through a NAT, for helpers that rewrite it in place.

A helper that rewrites a TCP payload (same length, so sequence numbers never
change) must see each byte once, in order, whatever the segmentation:

- the stream starts at the SYN's sequence number plus one (RFC 793 §3.3);
- a segment that starts beyond the next expected byte leaves a gap the
  helper cannot parse across: it is refused (``Segment.GAP``) and the sender
  retransmits it once the gap has been filled;
- bytes already seen (a retransmission, or the old part of a segment that
  also brings new bytes) get the same rewrites as the first time, from a
  bounded log of rewrites by sequence number;
- only new bytes are handed to the helper's parser.

Sequence numbers are compared modulo 2**32 (RFC 1982 style).
"""

from __future__ import annotations

from collections import deque
from enum import Enum

from ..packet.checksum import delta, rewrite_u16, update
from ..packet.frame import U16, VNET_F_NEEDS_CSUM

REWRITE_LOG = 256
"""Rewrites remembered per direction for retransmissions."""
RST_WINDOW = 65535
"""How far from the next expected sequence number a RST may be and still end the connection: the largest
window without scaling (RFC 793).  A blind attacker guessing a number hits it once in 32,768 tries."""


class Segment(Enum):
    OK = "ok"
    GAP = "gap"
    UNTRACKED = "untracked"   # no SYN seen: the stream cannot be followed


def seq_diff(a: int, b: int) -> int:
    """a - b as a signed 32-bit difference."""
    d = (a - b) & 0xFFFFFFFF
    return d - 0x100000000 if d & 0x80000000 else d


class StreamDirection:
    """One direction of a TCP connection, as a helper follows it."""

    __slots__ = ("next_seq", "rewrites")

    def __init__(self) -> None:
        self.next_seq: int | None = None
        self.rewrites: deque[tuple[int, bytes]] = deque(maxlen=REWRITE_LOG)
        """(sequence number of the first byte, the bytes written there)."""

    def segment(self, seq: int, syn: bool, length: int) -> tuple[Segment, int]:
        """Place a segment; returns (verdict, how many of its payload bytes are old)."""
        if syn:
            self.next_seq = (seq + 1) & 0xFFFFFFFF
            return Segment.OK, length
        if self.next_seq is None:
            return Segment.UNTRACKED, length
        ahead = seq_diff(seq, self.next_seq)
        if ahead > 0 and length:
            return Segment.GAP, 0
        old = min(length, -ahead) if ahead < 0 else 0
        return Segment.OK, old

    def rst_plausible(self, seq: int) -> bool:
        """Whether a RST with ``seq`` could come from this direction's sender (after RFC 5961 §3.2).

        The receiver honours a RST only within its window, so one far from the
        next expected byte is forged, and must not end what the helper follows.
        Before the stream is followed (no SYN seen) every RST is taken.
        """
        return self.next_seq is None or abs(seq_diff(seq, self.next_seq)) <= RST_WINDOW

    def advance(self, count: int) -> None:
        self.next_seq = (self.next_seq + count) & 0xFFFFFFFF

    def replay(self, frame: bytearray, payload: int, seq: int, length: int, l4: int) -> None:
        """Re-apply logged rewrites that fall inside ``frame``'s payload bytes [0, length)."""
        for at_seq, data in self.rewrites:
            start = seq_diff(at_seq, seq)
            for k, byte in enumerate(data):
                pos = start + k
                if 0 <= pos < length and frame[payload + pos] != byte:
                    write_payload_byte(frame, l4, payload + pos, byte)

    def log(self, seq: int, data: bytes) -> None:
        self.rewrites.append((seq & 0xFFFFFFFF, data))


def write_payload_u16(frame: bytearray, l4: int, at: int, value: int) -> None:
    """Write a 16-bit value into a TCP payload and fix the TCP checksum (RFC 1624).

    The checksum sums 16-bit words from the TCP header's start, so a value
    at an odd distance from it straddles two words: its delta is taken with
    the bytes swapped.  With NEEDS_CSUM the kernel sums the payload later.
    """
    if frame[0] & VNET_F_NEEDS_CSUM:
        U16.pack_into(frame, at, value)
        return
    rewrite_u16(frame, l4, at, value, l4 + 16)


def write_payload_byte(frame: bytearray, l4: int, at: int, value: int) -> None:
    """Write one payload byte and fix the TCP checksum."""
    old = frame[at]
    frame[at] = value
    if frame[0] & VNET_F_NEEDS_CSUM:
        return
    shift = 0 if (at - l4) & 1 else 8
    csum = U16.unpack_from(frame, l4 + 16)[0]
    U16.pack_into(frame, l4 + 16, update(csum, delta(old << shift, value << shift, 2)))
