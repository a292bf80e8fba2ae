"""A NAT mapping (an inside endpoint's outside port) and a session (one flow through it), the objects the
per-frame path touches: slotted, with their RFC 1624 checksum deltas computed once (``nat.py`` keeps the
tables)."""

from __future__ import annotations

from functools import lru_cache

from ..packet import checksum
from ..packet.frame import IpProto, ip_str
from .events import SessionInfo
from .tcpstate import TcpState

PROTO_NAMES = {IpProto.ICMP: "icmp", IpProto.TCP: "tcp", IpProto.UDP: "udp",
               IpProto.GRE: "gre", IpProto.ESP: "esp"}
ENDPOINT_INDEPENDENT, ADDRESS_DEPENDENT, ADDRESS_AND_PORT_DEPENDENT = 0, 1, 2
SIXTEEN_BITS = tuple(range(65536))
"""Every 16-bit value once: sessions keep their ports and checksum deltas as these shared objects rather than
ints of their own (28 bytes each), about 250 bytes a session."""


@lru_cache(maxsize=4096)
def address_bytes(address: int) -> bytes:
    """An address as the 4 bytes the hot path writes: one object for all of a host's sessions."""
    return address.to_bytes(4, "big")


@lru_cache(maxsize=4096)
def address_deltas(inside: int, wan: int) -> tuple[int, int, int, int]:
    """RFC 1624 deltas of the address rewrites, out and in, alone and with the TTL decrement: the same for every
    session of a host."""
    out_addr, in_addr = checksum.delta(inside, wan, 4), checksum.delta(wan, inside, 4)
    return (SIXTEEN_BITS[out_addr], SIXTEEN_BITS[in_addr], SIXTEEN_BITS[checksum.add(out_addr, checksum.TTL_DECREMENT)],
            SIXTEEN_BITS[checksum.add(in_addr, checksum.TTL_DECREMENT)])


def _port_delta(old: int, new: int) -> int:
    """RFC 1624 eq. 3 delta of one 16-bit field (``checksum.delta`` for width 2, without its loop)."""
    x = (~old & 0xFFFF) + new
    return (x & 0xFFFF) + (x >> 16)


class Ids:
    """Session ids, shared by the NAT's sessions and every helper's flows so that each is unique; the next one
    is kept across a restart."""
    __slots__ = ("next_id",)

    def __init__(self, next_id: int = 1):
        self.next_id = next_id

    def __iter__(self):
        return self

    def __next__(self) -> int:
        ident = self.next_id
        self.next_id = ident + 1
        return ident


class Mapping:
    """An inside endpoint's outside port (RFC 4787 §4.1)."""
    __slots__ = ("proto", "inside_ip", "inside_port", "outside_port", "static", "shared", "sessions", "remotes",
                 "first_remote", "key", "filtering")

    def __init__(self, proto: int, inside_ip: int, inside_port: int, outside_port: int, static: bool = False,
                 shared: bool = False, key: tuple | None = None, filtering: int = ADDRESS_DEPENDENT):
        self.key = key or (proto, inside_ip, inside_port)
        """Its key in ``NatTable.mappings``: the inside endpoint, and the destination under dependent mapping."""
        self.filtering = filtering
        """RFC 4787 §5, as it was when the mapping was made."""
        self.proto = proto
        self.inside_ip = inside_ip
        self.inside_port = SIXTEEN_BITS[inside_port]
        self.outside_port = SIXTEEN_BITS[outside_port]
        self.static = static
        self.shared = shared
        self.sessions = 0
        self.first_remote: int | None = None
        """The remote address of its sessions while they all have one (most mappings: no dict needed)."""
        self.remotes: dict[int, int] | None = None
        """Remote address -> sessions to it, once its sessions have several (RFC 4787 §5 filtering)."""

    def has_remote(self, address: int) -> bool:
        """Whether some session of this mapping talks to ``address``."""
        return address == self.first_remote if self.remotes is None else address in self.remotes

    def add_remote(self, address: int) -> None:
        """Count a new session to ``address`` (before ``sessions`` counts it)."""
        if self.remotes is None:
            if self.sessions == 0 or address == self.first_remote:
                self.first_remote = address
                return
            self.remotes = {self.first_remote: self.sessions}
        self.remotes[address] = self.remotes.get(address, 0) + 1

    def remove_remote(self, address: int) -> None:
        """A session to ``address`` ended (after ``sessions`` stopped counting it)."""
        if self.remotes is None:
            if self.sessions == 0:
                self.first_remote = None
            return
        left = self.remotes[address] - 1
        if left:
            self.remotes[address] = left
        else:
            del self.remotes[address]


class Session:
    """One flow through a mapping.  Mutable and slotted: the hot path touches it per packet."""
    __slots__ = ("id", "proto", "inside_ip", "inside_port", "outside_port", "remote_ip", "remote_port",
                 "mapping", "state", "timeout", "fixed_deadline", "created", "last_seen",
                 "packets_in", "packets_out", "bytes_in", "bytes_out", "out_key", "in_key",
                 "out_addr_delta", "out_ip_delta", "out_l4_delta",
                 "in_addr_delta", "in_ip_delta", "in_l4_delta", "closed", "helper", "helper_state",
                 "inside_ip_bytes", "tap", "holds", "scheduled", "recognised")

    def __init__(self, sid: int, mapping: Mapping, remote_ip: int, remote_port: int, wan_ip: int, now: float):
        proto = mapping.proto
        self.id = sid
        self.proto = proto
        self.inside_ip = mapping.inside_ip
        self.inside_ip_bytes = address_bytes(mapping.inside_ip)
        self.inside_port = mapping.inside_port
        self.outside_port = mapping.outside_port
        self.remote_ip = remote_ip
        self.remote_port = remote_port = SIXTEEN_BITS[remote_port]
        self.mapping = mapping
        self.state: TcpState | None = None
        self.timeout = 0.0
        self.fixed_deadline = 0.0
        self.created = now
        self.last_seen = now
        self.packets_in = self.packets_out = self.bytes_in = self.bytes_out = 0
        self.closed = False
        self.helper = None
        self.helper_state = None
        self.tap = None
        """A callable that gets each forwarded frame, while a capture runs (``ctl capture``)."""
        self.holds = False
        """It counts towards its client holding its helper's VPN (single passthrough): a live VPN session."""
        self.scheduled = 0.0
        """The earliest deadline this session has in the timer heap (0: none)."""
        self.recognised: tuple[str, str] | None = None
        """(name, how) of a protocol that needs no helper, recognised when the session opened
        (``router.recognise``: ``Recogniser.recognise``); None for a plain flow or a helper's."""
        if proto == IpProto.ICMP:
            self.out_key = (proto, self.inside_ip, self.inside_port, remote_ip, 0)
            self.in_key = (proto, remote_ip, 0, wan_ip, self.outside_port)
        else:
            self.out_key = (proto, self.inside_ip, self.inside_port, remote_ip, remote_port)
            self.in_key = (proto, remote_ip, remote_port, wan_ip, self.outside_port)
        self._set_deltas(wan_ip)

    def _set_deltas(self, wan_ip: int) -> None:
        """Precompute the RFC 1624 deltas of both directions' rewrites."""
        out_addr, in_addr, self.out_ip_delta, self.in_ip_delta = address_deltas(self.inside_ip, wan_ip)
        out_port = _port_delta(self.inside_port, self.outside_port)
        in_port = _port_delta(self.outside_port, self.inside_port)
        shared = SIXTEEN_BITS
        self.out_addr_delta, self.in_addr_delta = out_addr, in_addr
        if self.proto == IpProto.ICMP:  # no pseudo-header: only the identifier changes
            self.out_l4_delta, self.in_l4_delta = shared[out_port], shared[in_port]
        else:
            self.out_l4_delta = shared[checksum.add(out_addr, out_port)]
            self.in_l4_delta = shared[checksum.add(in_addr, in_port)]

    def totals(self) -> tuple[int, int, int, int]:
        return self.packets_in, self.packets_out, self.bytes_in, self.bytes_out

    def view_state(self) -> str:
        return self.state.value if self.state else "active"

    def deadline(self) -> float:
        return self.fixed_deadline or self.last_seen + self.timeout

    def info(self, now: float, wan_ip: int) -> SessionInfo:
        vpn, details = None, ()
        if self.helper is not None:
            vpn = self.helper.name
            details = tuple(self.helper.describe(self))
        recognised, recognised_by = self.recognised or (None, None)
        return SessionInfo(
            id=self.id, proto=PROTO_NAMES.get(self.proto, str(self.proto)),
            inside=f"{ip_str(self.inside_ip)}:{self.inside_port}",
            outside=f"{ip_str(wan_ip)}:{self.outside_port}",
            remote=f"{ip_str(self.remote_ip)}:{self.remote_port}",
            state=self.view_state(),
            idle=round(max(0.0, now - self.last_seen), 3), age=round(max(0.0, now - self.created), 3),
            packets_in=self.packets_in, packets_out=self.packets_out,
            bytes_in=self.bytes_in, bytes_out=self.bytes_out, vpn=vpn, details=details,
            recognised=recognised, recognised_by=recognised_by)
