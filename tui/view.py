"""Which sessions a table shows and in what order: the filter, the sort, and the order kept by key (pure).

A filter is words, all of which must match (``/`` in the dashboard)::

    udp                    any of proto, inside, outside, remote, state contains "udp"
    remote:8.8.           that field contains the text (proto, inside, outside, remote, state, vpn,
                           recognised: the name of a protocol the router recognised without a helper)
    proto=tcp              that field is exactly the text
    idle>30  age<5m        seconds, or with s, m, h
    bytes>1M  packets<=10  in and out together, with k, M, G (powers of 1000)
    !state:established     not

``TableView`` keeps the ids of the matching sessions in sort order and is
told, once per screen update, which ids were added, removed or changed; it
moves only those rows (a sort by a counter re-sorts an almost sorted list).
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import Callable

from .session import Changes, Session

TEXT_FIELDS = ("proto", "inside", "outside", "remote", "state", "vpn", "recognised")
NUMBER_FIELDS = ("idle", "age", "packets", "bytes", "id")
TIME_FIELDS = ("idle", "age")
_TERM = re.compile(r"^(?P<neg>!?)(?:(?P<field>[a-z_]+)(?P<op>:|>=|<=|!=|=|>|<))?(?P<value>.*)$")
_UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_TIME_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class FilterError(ValueError):
    """A filter the dashboard cannot read; the message says which word and why."""


@dataclass(frozen=True, slots=True)
class Term:
    negate: bool
    field: str | None
    op: str
    value: str | float

    def matches(self, s: Session, now: float) -> bool:
        return self.test(s, now) != self.negate

    def test(self, s: Session, now: float) -> bool:
        if self.field is None:
            value = self.value
            return any(value in (getattr(s, name) or "").lower() for name in TEXT_FIELDS)
        if self.field in NUMBER_FIELDS:
            number = _number_of(s, self.field, now)
            return _compare(number, self.op, self.value)
        text = (getattr(s, self.field) or "").lower()
        if self.op == ":":
            return self.value in text
        return (text == self.value) == (self.op == "=")


class Filter:
    def __init__(self, text: str = ""):
        self.text = text.strip()
        self.terms = tuple(_parse(word) for word in self.text.split())
        self.time_dependent = any(t.field in TIME_FIELDS for t in self.terms)
        """Matching changes as time passes (idle, age): every row is checked again at each update."""

    def __bool__(self) -> bool:
        return bool(self.terms)

    def matches(self, s: Session, now: float) -> bool:
        return all(term.matches(s, now) for term in self.terms)


def _parse(word: str) -> Term:
    m = _TERM.match(word.lower())
    negate, field, op, value = bool(m["neg"]), m["field"], m["op"] or "", m["value"]
    if field is None:
        if not value:
            raise FilterError(f"{word!r}: nothing to look for")
        return Term(negate, None, "", value)
    if field in TEXT_FIELDS:
        if op not in (":", "=", "!="):
            raise FilterError(f"{word!r}: {field} takes :text or =text")
        return Term(negate != (op == "!="), field, ":" if op == ":" else "=", value)
    if field in NUMBER_FIELDS:
        if op == ":":
            op = "="
        return Term(negate, field, op, _parse_number(word, field, value))
    raise FilterError(f"{word!r}: no field {field!r} (fields: {', '.join(TEXT_FIELDS + NUMBER_FIELDS)})")


def _parse_number(word: str, field: str, value: str) -> float:
    units = _TIME_UNITS if field in TIME_FIELDS else _UNITS
    m = re.fullmatch(r"([0-9]*\.?[0-9]+)([a-z]?)", value)
    if m is None or m[2] not in units:
        raise FilterError(f"{word!r}: {field} needs a number{' (s, m, h)' if field in TIME_FIELDS else ' (k, M, G)'}")
    return float(m[1]) * units[m[2]]


def _number_of(s: Session, field: str, now: float) -> float:
    if field == "idle":
        return s.idle(now)
    if field == "age":
        return s.age(now)
    return getattr(s, field)


def _compare(number: float, op: str, value: float) -> bool:
    return {"=": number == value, "!=": number != value, ">": number > value, "<": number < value,
            ">=": number >= value, "<=": number <= value}[op]


# -- sorting ----------------------------------------------------------------------------------------

def address_key(text: str) -> tuple:
    """"192.168.1.2:40000" sorts by address, then port (numerically); other text after addresses."""
    host, _, port = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
    parts = host.split(".")
    if len(parts) == 4 and all(p.isdigit() for p in parts):
        return (0, *map(int, parts), int(port) if port.isdigit() else -1, port)
    return (1, 0, 0, 0, 0, 0, text)


SORT_KEYS: dict[str, Callable[[Session], tuple]] = {
    "id": lambda s: (s.id,),
    "proto": lambda s: (s.proto, s.id),
    "inside": lambda s: (address_key(s.inside), s.id),
    "outside": lambda s: (address_key(s.outside), s.id),
    "remote": lambda s: (address_key(s.remote), s.id),
    "state": lambda s: (s.state, s.id),
    "idle": lambda s: (-s.last_seen, s.id),
    "age": lambda s: (-s.created, s.id),
    "packets": lambda s: (s.packets, s.id),
    "bytes": lambda s: (s.bytes, s.id),
}
"""Column -> sort key.  Idle and age sort by the times they count from, which change only with events."""
CHANGING_KEYS = frozenset({"state", "idle", "packets", "bytes"})
"""Sort keys that a ``sessions_updated`` can change: changed rows move."""


class TableView:
    """The ids a table shows, in order, kept up to date by key."""

    def __init__(self, include: Callable[[Session], bool], sort: str = "id", reverse: bool = False):
        self.include = include
        """Which sessions belong to this table at all (NAT sessions, VPN flows)."""
        self.filter = Filter()
        self.sort, self.reverse = sort, reverse
        self._order: list[int] = []
        """Ascending by the sort key."""
        self._members: set[int] = set()
        self.dirty = True

    @property
    def rows(self) -> list[int]:
        """A new list each time: the table compares it with the one it shows."""
        return self._order[::-1] if self.reverse else list(self._order)

    def set_filter(self, text: str) -> None:
        """Raises FilterError, keeping the old filter, if the text cannot be read."""
        self.filter = Filter(text)
        self.dirty = True

    def set_sort(self, column: str, reverse: bool | None = None) -> None:
        if column not in SORT_KEYS:
            raise KeyError(column)
        if reverse is None:
            reverse = not self.reverse if column == self.sort else False
        self.sort, self.reverse = column, reverse
        self.dirty = True

    def rebuild(self, sessions: dict[int, Session], now: float) -> None:
        include, flt = self.include, self.filter
        chosen = [s for s in sessions.values() if include(s) and (not flt or flt.matches(s, now))]
        chosen.sort(key=SORT_KEYS[self.sort])
        self._order = [s.id for s in chosen]
        self._members = set(self._order)
        self.dirty = False

    def update(self, sessions: dict[int, Session], changes: Changes, now: float) -> bool:
        """Apply one screen update's changes; True if the rows or their order changed."""
        if self.dirty or changes.reset:
            self.rebuild(sessions, now)
            return True
        if self.filter.time_dependent:
            before = self._order
            self.rebuild(sessions, now)
            return before != self._order
        members, include, flt = self._members, self.include, self.filter
        key = SORT_KEYS[self.sort]
        moving = self.sort in CHANGING_KEYS
        out = {sid for sid in changes.removed if sid in members}
        into = []
        for sid in changes.added | changes.changed | changes.replaced:
            s = sessions.get(sid)
            if s is None:
                continue
            wanted = include(s) and flt.matches(s, now)
            if sid in members:
                if not wanted or moving or sid in changes.replaced:
                    out.add(sid)
                    if wanted:
                        into.append(s)
            elif wanted:
                into.append(s)
        if not out and not into:
            return False
        if len(out) + len(into) > 64 + len(self._order) // 16:
            self.rebuild(sessions, now)            # many moves: one sort of an almost sorted list is cheaper
            return True
        if out:
            self._order = [sid for sid in self._order if sid not in out]
            members -= out
        for s in into:
            index = bisect.bisect_left(self._order, key(s), key=lambda sid: key(sessions[sid]))
            self._order.insert(index, s.id)
            members.add(s.id)
        return True
