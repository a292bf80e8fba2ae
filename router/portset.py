"""The ports one customer of a shared IPv4 address may use: RFC 7597 §5.1's port-set algorithm (MAP-E).

A 16-bit port is read as three fields, from the most significant bit::

    | A (offset, a bits) | PSID (k bits) | j (m = 16 - a - k bits) |

Every port whose PSID field equals the customer's PSID is theirs, except the
ports with A = 0 when a > 0 (0 to 2^(16-a) - 1, which hold the system ports).
So the set is 2^a - 1 contiguous ranges of 2^m ports each; with a = 0 it is
one range.  A widely used MAP-E service assigns a = 4, k = 8: 15 ranges of 16
ports, 240 in all.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PortSet:
    offset: int
    """a: the offset bits (RFC 7597 §5.1; 6 by default there)."""
    psid_length: int
    """k: the PSID's length in bits."""
    psid: int
    """The Port Set ID."""

    def __post_init__(self) -> None:
        if not 0 <= self.offset <= 15:
            raise ValueError("offset: from 0 to 15 bits")
        if not 0 <= self.psid_length <= 16 - self.offset - (1 if self.offset == 0 else 0):
            raise ValueError(f"psid_length: from 0 to {16 - self.offset} bits with offset {self.offset}, "
                             "leaving the set at least one port")
        if not 0 <= self.psid < 1 << self.psid_length:
            raise ValueError(f"psid: from 0 to {(1 << self.psid_length) - 1} for a PSID of {self.psid_length} bits")

    @property
    def contiguous(self) -> int:
        """m: the low bits, so each range holds 2^m ports."""
        return 16 - self.offset - self.psid_length

    def ranges(self) -> list[tuple[int, int]]:
        """The set as (first, last) port ranges, in order."""
        a, m = self.offset, self.contiguous
        width = 1 << m
        first_a = 1 if a > 0 else 0
        out = []
        for high in range(first_a, 1 << a):
            first = (high << (16 - a)) | (self.psid << m) if a else self.psid << m
            out.append((first, first + width - 1))
        if out and out[0][0] == 0:            # a = 0 and PSID 0: port 0 is no port
            out[0] = (1, out[0][1])
        return [r for r in out if r[0] <= r[1]]

    def ports(self) -> tuple[int, ...]:
        return tuple(p for first, last in self.ranges() for p in range(first, last + 1))

    def __contains__(self, port: int) -> bool:
        a, m = self.offset, self.contiguous
        if not 0 < port <= 0xFFFF or (a and port >> (16 - a) == 0):
            return False
        return (port >> m) & ((1 << self.psid_length) - 1) == self.psid

    def size(self) -> int:
        return sum(last - first + 1 for first, last in self.ranges())

    def to_dict(self) -> dict:
        return {"offset": self.offset, "psid_length": self.psid_length, "psid": self.psid, "size": self.size(),
                "ranges": [list(r) for r in self.ranges()]}
