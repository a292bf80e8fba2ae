"""What the flow cache's counts mean, and the shape of an entry's key (the C side: ``table.c``, ``forward.c``).

An entry's key is (input port, IP protocol, source, source port, destination,
destination port, payload ID); the cache keeps its owners (the NAT session or
the helper's flow, and what the helper named: a tunnel, an SPI) and withdraws
an owner's entries in one call, so no Python object is kept per entry.  At
each sync the cache hands back, per entry used, its target (the session or
flow it counts for), whether it is outbound and a helper's flow, the helper's
own account, and its counts; ``apply`` puts them where the Python path would
have: a NAT session counts a GSO super-frame as the packets it stands for, a
helper's flow one per datagram.
"""

from __future__ import annotations

from ..helpers.offload import Offload
from . import _flowcache

OUTBOUND, FLOW = _flowcache.ACCOUNT_OUTBOUND, _flowcache.ACCOUNT_FLOW
NO_PORT = -1
PORT_AT = {True: 0, False: 2}
"""Which port a direction rewrites: the source going out, the destination coming in."""
ICMP_ID_AT = 4
"""Where an ICMP query's identifier is (RFC 792): it stands for the port."""
ADDRESS_AT = {True: 12, False: 16}
"""Where in the IPv4 header the address it rewrites is."""


def apply(target, flags: int, helper, frames: int, segments: int, ip_bytes: int, payload_bytes: int,
          last: float) -> None:
    """One entry's counts since the last sync, where ``forward_out``/``forward_in`` (a NAT session: segments) or
    ``_portless_out``/``_portless_in`` (a helper's flow: datagrams) would have put them."""
    packets = frames if flags & FLOW else segments
    if flags & OUTBOUND:
        target.packets_out += packets
        target.bytes_out += ip_bytes
    else:
        target.packets_in += packets
        target.bytes_in += ip_bytes
    target.last_seen = last
    if helper is not None:
        helper(frames, payload_bytes, last)


def split_keys(base: tuple, offload: Offload | None) -> tuple[tuple | None, tuple]:
    """(the marker's key or None, the entry's key) for a 5-tuple key without its payload ID."""
    if offload is None:
        return None, (*base, 0)
    if offload.split:
        return (*base, 0), (*base, offload.payload_id)
    return None, (*base, offload.payload_id)
