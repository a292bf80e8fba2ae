"""One NAT session or VPN flow as the dashboard keeps it, and what changed in the table between two screen updates.

Pure: no Textual, no sockets, no clock (``now`` is an argument).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from router.control import schema

BASE_FIELDS = frozenset(schema.SESSION_FIELDS) | {"vpn"} | frozenset(schema.SESSION_RECOGNISED)


class Session:
    """One NAT session or VPN flow.  Age and idle are kept as times, so they grow without events."""

    __slots__ = ("id", "proto", "inside", "outside", "remote", "state", "vpn", "packets_in", "packets_out",
                 "bytes_in", "bytes_out", "created", "last_seen", "fields", "flow", "recognised", "recognised_by")

    def __init__(self, data: dict, now: float, protos: dict[str, str]):
        self.id = data["id"]
        self.created = now - float(data.get("age") or 0.0)
        self.packets_in = self.packets_out = self.bytes_in = self.bytes_out = 0
        self.fields: dict = {}
        self.update(data, now, protos)

    def update(self, data: dict, now: float, protos: dict[str, str]) -> None:
        """Take a full session dict (snapshot, opened): every field, counters never lowered."""
        self.proto = data.get("proto", "?")
        self.inside, self.outside, self.remote = data.get("inside", ""), data.get("outside", ""), data.get("remote", "")
        self.vpn = data.get("vpn")
        self.recognised = data.get("recognised")
        """A protocol the router recognised without a helper, by name; None for the others."""
        self.recognised_by = data.get("recognised_by")
        """"port" or "first bytes" (``schema.RECOGNISED_BY``)."""
        self.fields = {k: v for k, v in data.items() if k not in BASE_FIELDS}
        self.classify(protos)
        self.update_counters(data, now)

    def classify(self, protos: dict[str, str]) -> None:
        """A VPN's own flow or a NAT session, by the protocols the router described (``protos``: vpn -> the
        ``proto`` of its flows); again whenever they change."""
        self.flow = schema.is_vpn_flow(self, protos)            # a Session reads as its dict (``get``)

    def update_counters(self, data: dict, now: float) -> None:
        """Take what ``sessions_updated`` says (state, idle and counters)."""
        self.state = data.get("state", getattr(self, "state", "?"))
        self.packets_in = max(self.packets_in, data.get("packets_in", 0))
        self.packets_out = max(self.packets_out, data.get("packets_out", 0))
        self.bytes_in = max(self.bytes_in, data.get("bytes_in", 0))
        self.bytes_out = max(self.bytes_out, data.get("bytes_out", 0))
        self.last_seen = now - float(data.get("idle") or 0.0)

    def age(self, now: float) -> float:
        return max(0.0, now - self.created)

    def idle(self, now: float) -> float:
        return max(0.0, now - self.last_seen)

    @property
    def packets(self) -> int:
        return self.packets_in + self.packets_out

    @property
    def bytes(self) -> int:
        return self.bytes_in + self.bytes_out

    def get(self, name: str, default=None):
        """A field by its wire name, base or protocol field."""
        if name in BASE_FIELDS and name not in ("age", "idle"):
            return getattr(self, name)
        return self.fields.get(name, default)


@dataclass(slots=True)
class Changes:
    """What changed since the last screen update, by id; ``reset`` if the whole table was replaced."""
    added: set = field(default_factory=set)
    removed: set = field(default_factory=set)
    changed: set = field(default_factory=set)
    """State, idle or counters changed (``sessions_updated``)."""
    replaced: set = field(default_factory=set)
    """Any field may have changed (opened again, a VPN event's fields)."""
    reset: bool = False

    def __bool__(self) -> bool:
        return self.reset or bool(self.added or self.removed or self.changed or self.replaced)
