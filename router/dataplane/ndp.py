"""The IPv6 neighbour cache of one link (RFC 4861 §7.3), kept small: what the router needs to send.

An address without a link-layer address yet is INCOMPLETE: frames to it wait (at most ``queue_limit`` each)
while multicast solicitations go out every ``retrans`` seconds, up to ``MAX_MULTICAST_SOLICIT``, after which
what waited is dropped and the entry forgotten.  A known address is used at once; once ``reachable`` seconds
have passed without a confirmation, the next frame to it also sends a unicast solicitation (PROBE), and
``MAX_UNICAST_SOLICIT`` unanswered ones forget it.  Entries are learnt from advertisements for addresses we
asked about and from solicitations that carry their sender's link-layer address (§7.2.3).
"""

from __future__ import annotations

from ..packet import ipv6
from ..packet.frame import ETH_OFFSET, IP_OFFSET, U16, EtherType

IPV6_ETHERTYPE = U16.pack(EtherType.IPV6)
MAX_MULTICAST_SOLICIT = 3
MAX_UNICAST_SOLICIT = 3


class Neighbour:
    __slots__ = ("mac", "prefix", "confirmed_until", "pending", "next_probe", "probes")

    def __init__(self) -> None:
        self.mac: bytes | None = None
        self.prefix = b""
        """The Ethernet header to it (destination, source, ethertype), once its address is known."""
        self.confirmed_until = 0.0
        self.pending: list[bytearray] = []
        self.next_probe: float | None = None
        self.probes = 0


class Neighbours:
    """The neighbours of one link, by IPv6 address (16 bytes)."""

    def __init__(self, own_mac: bytes, source: bytes, counters: dict, retrans: float = 1.0, reachable: float = 30.0,
                 queue_limit: int = 64, max_entries: int = 1024):
        self.own_mac, self.source, self.counters = own_mac, source, counters
        """Our link-layer address, and the address our solicitations come from."""
        self.retrans, self.reachable = retrans, reachable
        self.queue_limit, self.max_entries = queue_limit, max_entries
        self.entries: dict[bytes, Neighbour] = {}

    def mac_of(self, address: bytes) -> bytes | None:
        entry = self.entries.get(address)
        return entry.mac if entry is not None else None

    def send(self, address: bytes, frame: bytearray, now: float, out: list[bytearray]) -> bool:
        """Address ``frame`` to the neighbour and put it in ``out``, or queue it and solicit; False if it could
        not even wait (a full queue, or a full cache)."""
        entry = self.entries.get(address)
        if entry is not None and entry.mac is not None:
            frame[ETH_OFFSET:IP_OFFSET] = entry.prefix
            out.append(frame)
            if now > entry.confirmed_until and entry.next_probe is None:
                out.append(self._solicit(address, entry, now))
            return True
        if entry is None:
            if len(self.entries) >= self.max_entries:
                return False
            entry = self.entries[address] = Neighbour()
        if len(entry.pending) >= self.queue_limit:
            return False
        entry.pending.append(frame)
        if entry.next_probe is None:
            out.append(self._solicit(address, entry, now))
        return True

    def solicit(self, address: bytes, now: float) -> bytearray:
        """An NS for ``address`` now (an entry made for it if there is none)."""
        entry = self.entries.setdefault(address, Neighbour())
        return self._solicit(address, entry, now)

    def _solicit(self, address: bytes, entry: Neighbour, now: float) -> bytearray:
        entry.probes += 1
        entry.next_probe = now + self.retrans
        self.counters["nd_solicitations_sent"] += 1
        return ipv6.neighbor_solicitation(self.own_mac, self.source, address, entry.mac)

    def learn(self, address: bytes, mac: bytes, now: float) -> list[bytearray]:
        """``address`` is at ``mac``: the frames that waited for it.  News of an address we hold no entry for
        makes one only while there is room (RFC 4861 §7.2.3 creates entries from solicitations)."""
        entry = self.entries.get(address)
        if entry is None:
            if len(self.entries) >= self.max_entries:
                return []
            entry = self.entries[address] = Neighbour()
        entry.mac, entry.prefix = mac, mac + self.own_mac + IPV6_ETHERTYPE
        entry.confirmed_until, entry.next_probe, entry.probes = now + self.reachable, None, 0
        waiting, entry.pending = entry.pending, []
        for frame in waiting:
            frame[ETH_OFFSET:IP_OFFSET] = entry.prefix
        return waiting

    def tick(self, now: float) -> tuple[list[bytearray], int]:
        """(solicitations to send, frames dropped unresolved) at ``now``."""
        solicitations, dropped = [], 0
        for address, entry in list(self.entries.items()):
            if entry.next_probe is None or now < entry.next_probe:
                continue
            limit = MAX_UNICAST_SOLICIT if entry.mac else MAX_MULTICAST_SOLICIT
            if entry.probes < limit:
                solicitations.append(self._solicit(address, entry, now))
            else:
                dropped += len(entry.pending)
                del self.entries[address]
        return solicitations, dropped

    def deadline(self) -> float | None:
        probes = [e.next_probe for e in self.entries.values() if e.next_probe is not None]
        return min(probes) if probes else None

    def view(self) -> dict[str, str | None]:
        return {ipv6.address_text(a): e.mac.hex(":") if e.mac else None for a, e in self.entries.items()}
