"""IPv6 reassembly for packets to the router itself (RFC 8200 §4.5): a softwire's exit point takes tunnel packets
the path cut in pieces (RFC 2473 §7), so that no IPv4 inside is lost to an IPv6 fragment.

Kept small and bounded: a packet is reassembled only when its Fragment header follows the fixed header
directly (what tunnel entry points send); at most ``MAX_PACKETS`` at once, each at most 65,535 bytes, each
given ``TIMEOUT`` seconds (§4.5: 60).  Overlapping fragments discard the whole packet (RFC 5722 §4), as does a
fragment whose length is not a multiple of 8 bytes while more follow (§4.5).
"""

from __future__ import annotations

from ..packet import ipv6
from ..packet.frame import IP_OFFSET

IP = IP_OFFSET
TIMEOUT = 60.0
MAX_PACKETS = 64
MAX_SIZE = 0xFFFF


class Pieces:
    __slots__ = ("head", "parts", "total", "size", "expires", "next_header")

    def __init__(self, head: bytes, next_header: int, expires: float):
        self.head = head
        """The first frame's virtio-net and Ethernet headers and IPv6 fixed header, to rebuild the packet in."""
        self.parts: dict[int, bytes] = {}
        self.total: int | None = None
        self.size = 0
        self.expires = expires
        self.next_header = next_header


class Reassembly:
    """Fragments in, whole packets out."""

    def __init__(self) -> None:
        self.packets: dict[tuple[bytes, bytes, int], Pieces] = {}
        self.timed_out = 0

    def add(self, frame: bytearray, offset: int, end: int, src: bytes, dst: bytes, now: float) -> bytearray | str | None:
        """A fragment (its Fragment header at ``offset``): the whole packet once every piece is in, as a frame
        with no Fragment header; None while pieces are missing; a string saying why the packet was given up."""
        if offset != IP + ipv6.HEADER_LEN:
            return "a Fragment header after other extension headers"
        if end - offset < 8:
            return "a cut Fragment header"
        next_header, place = frame[offset], (frame[offset + 2] << 8 | frame[offset + 3])
        start, more = place & 0xFFF8, place & 1
        data = bytes(frame[offset + 8:end])
        if more and len(data) % 8:
            return "a fragment that is not a multiple of 8 bytes with more to come"
        key = (src, dst, int.from_bytes(frame[offset + 4:offset + 8], "big"))
        pieces = self.packets.get(key)
        if pieces is None:
            if len(self.packets) >= MAX_PACKETS:
                return f"{MAX_PACKETS} packets in reassembly already"
            pieces = self.packets[key] = Pieces(bytes(frame[:offset]), next_header, now + TIMEOUT)
        problem = self._place(pieces, start, data, more)
        if problem:
            del self.packets[key]
            return problem
        if pieces.total is None or pieces.size != pieces.total:
            return None
        del self.packets[key]
        return _whole(pieces)

    @staticmethod
    def _place(pieces: Pieces, start: int, data: bytes, more: int) -> str | None:
        stop = start + len(data)
        if stop > MAX_SIZE:
            return "a packet of more than 65,535 bytes"
        if not more:
            if pieces.total is not None and pieces.total != stop:
                return "two last fragments"
            pieces.total = stop
        if pieces.total is not None and stop > pieces.total:
            return "a fragment past the last one"
        for other, part in pieces.parts.items():
            if start < other + len(part) and other < stop:
                return "overlapping fragments (RFC 5722)"
        pieces.parts[start] = data
        pieces.size += len(data)
        return None

    def expire(self, now: float) -> None:
        for key, pieces in list(self.packets.items()):
            if now >= pieces.expires:
                del self.packets[key]
                self.timed_out += 1

    def next_deadline(self) -> float | None:
        return min((p.expires for p in self.packets.values()), default=None)


def _whole(pieces: Pieces) -> bytearray:
    frame = bytearray(pieces.head)
    payload = b"".join(pieces.parts[start] for start in sorted(pieces.parts))
    frame[IP + 4:IP + 6] = len(payload).to_bytes(2, "big")
    frame[IP + 6] = pieces.next_header
    frame += payload
    return frame
