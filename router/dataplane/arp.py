"""Neighbour resolution on one port: an ARP cache with expiry and a bounded queue of waiting frames.

RFC 826 for the protocol; RFC 1122 §2.3.2.1 and §2.3.2.2 for the cache:
entries expire, stale entries are revalidated with a unicast request while
still in use, and at most a few frames wait per unresolved address.
"""

from __future__ import annotations

from collections import deque

from ..packet.arp import ARP, ARP_OFFSET, ArpOp, arp_frame
from ..packet.frame import BROADCAST_MAC, EtherType

PROBES = 3
"""Requests sent for an address before its waiting frames are dropped."""


class Neighbour:
    __slots__ = ("prefix", "mac", "expires", "probed")

    def __init__(self, mac: bytes, own_mac: bytes, expires: float):
        self.mac = mac
        self.prefix = mac + own_mac + EtherType.IPV4.to_bytes(2, "big")
        """The Ethernet header of a frame to this neighbour: written in place per frame."""
        self.expires = expires
        self.probed = 0.0


class Pending:
    __slots__ = ("frames", "tries", "next_try")

    def __init__(self, next_try: float):
        self.frames: deque[bytearray] = deque()
        self.tries = 1
        self.next_try = next_try


class ArpTable:
    """The neighbours of one port."""

    def __init__(self, own_mac: bytes, own_ip: int, lifetime: float, retry: float,
                 queue_len: int, max_pending: int):
        self.own_mac = own_mac
        self.own_ip = own_ip
        self.lifetime = lifetime
        self.retry = retry
        self.queue_len = queue_len
        self.max_pending = max_pending
        self.cache: dict[int, Neighbour] = {}
        self.pending: dict[int, Pending] = {}

    def request(self, ip: int, unicast_to: bytes | None = None) -> bytearray:
        return arp_frame(ArpOp.REQUEST, self.own_mac, self.own_ip, bytes(6), ip, unicast_to)

    def learn(self, ip: int, mac: bytes, now: float) -> list[bytearray]:
        """Record ``ip`` at ``mac``; return the frames that were waiting for it, addressed."""
        entry = Neighbour(mac, self.own_mac, now + self.lifetime)
        self.cache[ip] = entry
        waiting = self.pending.pop(ip, None)
        if waiting is None:
            return []
        for frame in waiting.frames:
            frame[12:26] = entry.prefix
        return list(waiting.frames)

    def enqueue(self, ip: int, frame: bytearray, now: float) -> tuple[bool, bytearray | None]:
        """Hold a frame until ``ip`` resolves.

        Returns (queued, request to send).  ``queued`` is False when the queue
        for ``ip`` or the number of addresses being resolved is at its limit.
        """
        waiting = self.pending.get(ip)
        if waiting is None:
            if len(self.pending) >= self.max_pending:
                return False, None
            waiting = self.pending[ip] = Pending(now + self.retry)
            waiting.frames.append(frame)
            return True, self.request(ip)
        if len(waiting.frames) >= self.queue_len:
            return False, None
        waiting.frames.append(frame)
        return True, None

    def probe(self, ip: int, now: float) -> bytearray | None:
        """Resolve ``ip`` with no frame waiting (a restored session's host); the request, or None if it is
        known, already being resolved, or too many are."""
        if ip in self.cache or ip in self.pending or len(self.pending) >= self.max_pending:
            return None
        self.pending[ip] = Pending(now + self.retry)
        return self.request(ip)

    def revalidate(self, ip: int, entry: Neighbour, now: float) -> bytearray | None:
        """A stale entry in use: ask its owner again, at most once per retry interval."""
        if now - entry.probed < self.retry:
            return None
        entry.probed = now
        if now > entry.expires + PROBES * self.retry:
            del self.cache[ip]
        return self.request(ip, unicast_to=entry.mac)

    def tick(self, now: float) -> tuple[list[bytearray], int, list[int]]:
        """Retry pending resolutions; returns (requests to send, frames given up on, addresses given up on)."""
        requests, dropped, unanswered = [], 0, []
        for ip, waiting in list(self.pending.items()):
            if waiting.next_try > now:
                continue
            if waiting.tries >= PROBES:
                dropped += len(waiting.frames)
                unanswered.append(ip)
                del self.pending[ip]
                continue
            waiting.tries += 1
            waiting.next_try = now + self.retry
            requests.append(self.request(ip))
        for ip, entry in list(self.cache.items()):
            if now > entry.expires + PROBES * self.retry:
                del self.cache[ip]
        return requests, dropped, unanswered

    def next_deadline(self) -> float | None:
        if not self.pending:
            return None
        return min(p.next_try for p in self.pending.values())


def parse_arp(frame: bytearray):
    """Return (op, sender MAC, sender IP, target IP) of an Ethernet/IPv4 ARP frame, or None if malformed."""
    if len(frame) < ARP_OFFSET + ARP.size:
        return None
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = ARP.unpack_from(frame, ARP_OFFSET)
    if htype != 1 or ptype != EtherType.IPV4 or hlen != 6 or plen != 4 or op not in (1, 2):
        return None
    if sha == BROADCAST_MAC or sha[0] & 1:
        return None
    return op, sha, spa, tpa
