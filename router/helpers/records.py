"""State-file records: what a restart keeps, as plain values, and how they are read back.

A record is a map of ints, floats, strings, bytes, booleans, None, lists and
maps (``router.state`` writes them with MessagePack); it never names a class
or a function, so reading a file runs nothing but this code.  Each owner
writes its own records: the NAT its mappings and sessions, each helper its
flows and what it keeps on its NAT sessions (``Helper.flow_records``,
``Helper.session_record``).

Reading goes through ``Record``: each field is checked as it is read (type,
range, the configured prefixes), a missing field takes its default, an
unknown one is ignored, and a field that makes no sense raises ``BadRecord``
with the reason.  ``Restore.each`` then drops that record, counts it by kind
and reason, and goes on with the next: a damaged record is never fatal.
Objects are built only by the router's own constructors, from the values
read.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Callable, Iterable

from ..packet.frame import ip_str, is_unicast

REQUIRED = object()
"""A field's default when it has none: a record without it is dropped."""
MAX_TEXT = 1024
MAX_INT = (1 << 63) - 1
MAX_REASONS = 50
"""Distinct (kind, reason) pairs told apart among dropped records; the rest count as "other reasons"."""


class BadRecord(ValueError):
    """A record that does not make sense; ``str()`` says why, in a few words."""


class Record:
    """One record as read from a state file: typed, checked access to its fields."""

    __slots__ = ("data",)

    def __init__(self, data) -> None:
        if not isinstance(data, dict):
            raise BadRecord(f"not a map but {type(data).__name__}")
        self.data = data

    def _missing(self, key: str, default):
        """A missing field's value: its default, unless it has none."""
        if default is REQUIRED:
            raise BadRecord(f"no {key}")
        return default

    def integer(self, key: str, lo: int = 0, hi: int = MAX_INT, default=REQUIRED) -> int:
        if key not in self.data:
            return self._missing(key, default)
        value = self.data[key]
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise BadRecord(f"{key} {_show(value)} is not a whole number from {lo} to {hi}")
        return value

    def optional_integer(self, key: str, lo: int = 0, hi: int = MAX_INT) -> int | None:
        return None if self.data.get(key) is None else self.integer(key, lo, hi)

    def port(self, key: str, default=REQUIRED) -> int:
        return self.integer(key, 0, 65535, default)

    def time(self, key: str, default=REQUIRED) -> float:
        """A time on the router's clock, or a duration: a finite number."""
        if key not in self.data:
            return self._missing(key, default)
        value = self.data[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise BadRecord(f"{key} {_show(value)} is not a time")
        return float(value)

    def flag(self, key: str, default: bool = False) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise BadRecord(f"{key} {_show(value)} is not true or false")
        return value

    def text(self, key: str, default=REQUIRED, choices: Iterable[str] | None = None) -> str:
        if key not in self.data:
            return self._missing(key, default)
        value = self.data[key]
        if not isinstance(value, str) or len(value) > MAX_TEXT:
            raise BadRecord(f"{key} is not a string of at most {MAX_TEXT} characters")
        if choices is not None and value not in choices:
            raise BadRecord(f"{key} {_show(value)} is not one of {', '.join(choices)}")
        return value

    def optional_text(self, key: str) -> str | None:
        return None if self.data.get(key) is None else self.text(key)

    def octets(self, key: str, size: int | None = None, most: int = 65536, default=REQUIRED) -> bytes:
        if key not in self.data:
            return self._missing(key, default)
        value = self.data[key]
        if not isinstance(value, bytes) or (size is not None and len(value) != size) or len(value) > most:
            raise BadRecord(f"{key} is not {size if size is not None else f'at most {most}'} bytes")
        return value

    def items(self, key: str, most: int = 1 << 20) -> list:
        """A list field (empty if missing)."""
        value = self.data.get(key, [])
        if not isinstance(value, list) or len(value) > most:
            raise BadRecord(f"{key} is not a list of at most {most} items")
        return value

    def record(self, key: str) -> "Record | None":
        """A map field as a record of its own, or None if missing."""
        value = self.data.get(key)
        return None if value is None else Record(value)


class Restore:
    """What reading a state file's records needs: the configured prefixes, the ids taken, and the tally.

    ``counts`` holds, per kind ("session", "pptp call"...), how many records
    were taken up; ``dropped`` how many were not, per (kind, reason).
    """

    def __init__(self, lan_ip: int, lan_prefix_len: int, wan_ip: int, clock: float, flow_limit: int = 1 << 16,
                 host_flow_limit: int = 1 << 16):
        self.lan_ip, self.wan_ip = lan_ip, wan_ip
        self.lan_mask = (0xFFFFFFFF << (32 - lan_prefix_len)) & 0xFFFFFFFF
        self.lan_net = lan_ip & self.lan_mask
        self.lan_bcast = self.lan_net | (~self.lan_mask & 0xFFFFFFFF)
        self.clock = clock
        """The router's clock when the file was written: nothing was seen after it."""
        self.flow_limit, self.host_flow_limit = flow_limit, host_flow_limit
        """Helper flows in all and per LAN host (``limits.sessions``, ``limits.sessions_per_host``)."""
        self.host_flows: Counter = Counter()
        self.flow_count = 0
        self.ids: set[int] = set()
        self.flows: dict[int, object] = {}
        """Restored helper flows a helper needs to find by id (an IKE session's association)."""
        self.counts: Counter = Counter()
        self.dropped: Counter = Counter()

    # -- checked fields ------------------------------------------------------------------------------

    def inside(self, record: Record, key: str) -> int:
        """An address of a host on the LAN (not the router's, the network's or the broadcast address)."""
        address = record.integer(key, 0, 0xFFFFFFFF)
        if address & self.lan_mask != self.lan_net or address in (self.lan_ip, self.lan_net, self.lan_bcast):
            raise BadRecord(f"{key} {ip_str(address)} is not a host on the LAN")
        return address

    def remote(self, record: Record, key: str) -> int:
        """A unicast address beyond the WAN port (not on the LAN, not the router's)."""
        address = record.integer(key, 0, 0xFFFFFFFF)
        if not is_unicast(address) or address & self.lan_mask == self.lan_net or address == self.wan_ip:
            raise BadRecord(f"{key} {ip_str(address)} is not a remote unicast address")
        return address

    def seen(self, record: Record, key: str, default=REQUIRED) -> float:
        """A time something was seen: not after the file was written."""
        when = record.time(key, default)
        if when > self.clock + 1e-6:
            raise BadRecord(f"{key} {when} is after the file was written ({self.clock})")
        return when

    def times(self, record: Record) -> tuple[float, float]:
        """A flow's (created, last_seen), in that order."""
        created = self.seen(record, "created")
        last_seen = self.seen(record, "last_seen", created)
        if last_seen < created:
            raise BadRecord("last_seen is before created")
        return created, last_seen

    def claim(self, record: Record, key: str = "id") -> int:
        """A session or flow id: unique across the file."""
        ident = record.integer(key, 1)
        if ident in self.ids:
            raise BadRecord(f"id {ident} used twice")
        self.ids.add(ident)
        return ident

    def take_flow(self, inside: int) -> None:
        """One more helper flow for ``inside``, within the router's limits (as ``HelperContext.room``)."""
        if self.flow_count >= self.flow_limit or self.host_flows[inside] >= self.host_flow_limit:
            raise BadRecord("beyond the session limits")
        self.flow_count += 1
        self.host_flows[inside] += 1

    # -- the tally -----------------------------------------------------------------------------------

    def each(self, kind: str, records: list, build: Callable[[Record], object]) -> list:
        """``build`` each record; what it built, in order. A ``BadRecord`` drops that record only."""
        built = []
        for data in records:
            try:
                made = build(Record(data))
            except BadRecord as exc:
                self.drop(kind, str(exc))
                continue
            self.counts[kind] += 1
            built.append(made)
        return built

    def drop(self, kind: str, reason: str) -> None:
        if len(self.dropped) >= MAX_REASONS and (kind, reason) not in self.dropped:
            reason = "other reasons"
        self.dropped[(kind, reason)] += 1

    def undo(self, kind: str, reason: str) -> None:
        """A record taken up, then let go (its flow's NAT session was not restored, say)."""
        self.counts[kind] -= 1
        if not self.counts[kind]:
            del self.counts[kind]
        self.drop(kind, reason)


def _show(value) -> str:
    """A field's value in a reason: short, whatever the file holds."""
    if isinstance(value, (list, dict)):
        return f"(a {'list' if isinstance(value, list) else 'map'})"
    text = repr(value[:40] if isinstance(value, (str, bytes)) else value)
    return text if len(text) <= 40 else text[:37] + "..."


def flow_record(flow) -> dict:
    """The fields every ``Flow`` has, as a record (its helper adds its own)."""
    return {"id": flow.id, "inside_ip": flow.inside_ip, "remote_ip": flow.remote_ip, "created": flow.created,
            "last_seen": flow.last_seen, "packets_in": flow.packets_in, "packets_out": flow.packets_out,
            "bytes_in": flow.bytes_in, "bytes_out": flow.bytes_out}


def restore_counters(obj, record: Record) -> None:
    """Packets and bytes each way, as a record holds them (a session's or a flow's)."""
    obj.packets_in = record.integer("packets_in", default=0)
    obj.packets_out = record.integer("packets_out", default=0)
    obj.bytes_in = record.integer("bytes_in", default=0)
    obj.bytes_out = record.integer("bytes_out", default=0)
