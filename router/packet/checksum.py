"""The Internet checksum (RFC 1071) and its incremental update (RFC 1624).

A *sum* here is the 16-bit one's complement sum, folded, not complemented.
A *checksum* is the complemented sum, as it stands in IP, ICMP, TCP and UDP
headers.  A *delta* is what one adds to a sum when some 16-bit words of the
covered data change from ``old`` to ``new``: ``~old + new`` (RFC 1624 eq. 3).
"""

from __future__ import annotations

import sys

_LITTLE = sys.byteorder == "little"


def fold(value: int) -> int:
    """Fold a wide one's complement sum into 16 bits."""
    while value >> 16:
        value = (value & 0xFFFF) + (value >> 16)
    return value


def ones_sum(data: bytes | bytearray | memoryview, start: int = 0, end: int | None = None) -> int:
    """RFC 1071 one's complement sum of ``data[start:end]``, folded, big-endian words.

    Sums native-order 16-bit words in C (``memoryview.cast``) and swaps the
    folded result on little-endian machines (RFC 1071 §2(B): the sum is
    independent of byte order up to a final swap).
    """
    view = memoryview(data)[start:end]
    total = 0
    if len(view) & 1:
        # The odd byte is the high byte of a zero-padded big-endian word.
        total = view[-1] if _LITTLE else view[-1] << 8
        view = view[:-1]
    total += sum(view.cast("H"))
    total = fold(total)
    if _LITTLE:
        total = ((total >> 8) | (total << 8)) & 0xFFFF
    return total


def internet_checksum(data: bytes | bytearray | memoryview, start: int = 0, end: int | None = None,
                      initial: int = 0) -> int:
    """The checksum field value for ``data[start:end]`` with the field zeroed (RFC 1071)."""
    return ~fold(ones_sum(data, start, end) + initial) & 0xFFFF


def word_sum(value: int, width: int) -> int:
    """One's complement sum of the 16-bit words of an unsigned integer ``width`` bytes wide."""
    total = 0
    for _ in range(width // 2):
        total += value & 0xFFFF
        value >>= 16
    return fold(total)


def delta(old: int, new: int, width: int) -> int:
    """RFC 1624 eq. 3 delta for a field of ``width`` bytes changing from ``old`` to ``new``."""
    return fold((~word_sum(old, width) & 0xFFFF) + word_sum(new, width))


def add(*deltas: int) -> int:
    """Combine deltas (or sums) into one."""
    return fold(sum(deltas))


def update(checksum: int, d: int) -> int:
    """Apply a delta to a full checksum field: ``HC' = ~(~HC + delta)`` (RFC 1624 eq. 3)."""
    x = (~checksum & 0xFFFF) + d
    x = (x & 0xFFFF) + (x >> 16)
    x = (x & 0xFFFF) + (x >> 16)
    return ~x & 0xFFFF


def update_partial(partial: int, d: int) -> int:
    """Apply a delta to a partial (pseudo-header) sum, which is not complemented.

    With virtio-net NEEDS_CSUM the checksum field holds the folded pseudo-header
    sum; whoever completes it sums from ``csum_start`` on and complements.
    """
    x = partial + d
    x = (x & 0xFFFF) + (x >> 16)
    return (x & 0xFFFF) + (x >> 16)


TTL_DECREMENT = delta(0x0100, 0x0000, 2)
"""Delta for the IPv4 (TTL, protocol) word when TTL drops by one (RFC 1624 §4, RFC 1812 §5.3.1)."""


def rewrite_u16(data: bytearray, start: int, at: int, value: int, csum_at: int, zero_is_none: bool = False) -> None:
    """Write a 16-bit field at ``at`` and fix the checksum at ``csum_at`` that covers ``data`` from ``start``.

    The sum runs over 16-bit words from ``start``, so a field at an odd
    distance from it straddles two words: its delta is taken with the bytes
    swapped (RFC 1624 on the words actually summed).  With ``zero_is_none``
    (UDP, RFC 768) a zero checksum means "none" and stays zero, and a
    computed zero is sent as 0xFFFF.
    """
    old = data[at] << 8 | data[at + 1]
    if old == value:
        return
    data[at], data[at + 1] = value >> 8, value & 0xFF
    csum = data[csum_at] << 8 | data[csum_at + 1]
    if zero_is_none and not csum:
        return
    if (at - start) & 1:
        old, value = ((old & 0xFF) << 8) | (old >> 8), ((value & 0xFF) << 8) | (value >> 8)
    new = update(csum, delta(old, value, 2))
    if zero_is_none and not new:
        new = 0xFFFF
    data[csum_at], data[csum_at + 1] = new >> 8, new & 0xFF
