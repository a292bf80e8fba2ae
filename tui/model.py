"""The dashboard's picture of the router, kept from one snapshot and the events that follow it.

Pure: no Textual, no sockets, no clock.  Every method that needs the time takes
``now`` (the dashboard's monotonic seconds), so a test can move time in one line.

Theory of operation (control protocol 3, ``router.control.schema``)
------------------------------------------------------------------
The link asks the router's ``version`` first: its ``helpers`` describe the
router's VPN protocols (``describe``, ``tui.protocols``), which decide which
sessions are a VPN's own flows, what its events change and what the switches
are.  Descriptions that come after the table (or change on a reconnection)
sort the table again.  Then the link subscribes and reads the table.
``subscribed(seq)`` records the seq the next event carries;
``load_snapshot(sessions)`` replaces the table; ``apply_events(events)``
applies events in the order they came.  The stream is
ordered (one socket), so an event read before the snapshot's answer is already
in the snapshot and one read after it is newer: applying both is safe because
every event is applied idempotently.

Rules, in the order they are checked for each event:

1. ``seq < expected``: stale (a duplicate, or older than the subscription); skipped.
2. ``seq > expected``: events were lost.  The event is applied, ``expected``
   moves past it, and a resync is requested: the link reads ``sessions`` and
   ``status`` again, and the new snapshot replaces the table.
3. Counters only grow: a late value never lowers packets or bytes.
4. A closed id is remembered for ``CLOSED_MEMORY`` seconds: a late
   ``sessions_updated`` never brings it back.
5. An id in ``sessions_updated`` that the model never saw is a session it
   missed: a resync is requested, at most once every ``UNKNOWN_RESYNC_INTERVAL``.
   (Today's router announces NAT sessions with ``session_opened`` but not the
   VPN flows, so a new call, tunnel or association is learned this way.)
6. A ``vpn`` event naming a known flow by ``id`` updates the fields its
   protocol's view lets events change, and a list field by the view's
   ``list_events``; one of the view's ``ending_events`` ends the flow.

The router's ``recognisers`` (``version``, with the helpers) name the
protocols it recognises without a helper: their sessions stay NAT sessions,
and are counted and listed by name as well (``recognised_ids``).

The router's settings come from ``status`` (every second) and from the events
that change them: its WAN (``wan``: plain IPv4 from a router that says none),
each switch's mode and holder (``switch_changed``; by the names the router
gives them, its protocols'), the NAT behaviour new sessions get
(``profile_changed``), the access rules' summary.
A ``set_passthrough`` answer says only on or off: the mode it confirms is the
one asked for ("single", "multi", "off"); after "on" it is unknown ("on")
until the event or the next status says which.

The views (tables, counts) read ``sessions`` and the change sets that
``take_changes()`` hands over once per screen update.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from router.control import schema

from . import format as fmt
from .protocols import Protocol, Recogniser, flow_protos, read_protocols, read_recognisers, title
from .rates import Rates
from .session import Changes, Session

CLOSED_MEMORY = 60.0
"""Seconds a closed session's id is remembered (rule 4)."""
UNKNOWN_RESYNC_INTERVAL = 5.0
"""Least seconds between two resyncs asked for because of unknown ids (rule 5)."""
LOG_LENGTH = 2000
"""Entries the event log keeps."""


@dataclass(frozen=True, slots=True)
class LogEntry:
    """A line of the event log: when (dashboard time), a kind that picks its colour, and the text."""
    time: float
    kind: str
    """opened, closed, switch, profile, drop, vpn, link, error"""
    text: str


class Model:
    def __init__(self) -> None:
        self.sessions: dict[int, Session] = {}
        self.protocols: dict[str, Protocol] = {}
        """The router's VPN protocols, in the order of their switches (``describe``); none until it says."""
        self.protos: dict[str, str] = {}
        """vpn -> the ``proto`` of its own flows, from ``protocols``."""
        self.switches: dict[str, bool | None] = {}
        """Each switch as the router last confirmed it, by name; absent (None) before the first status."""
        self.pending: set[str] = set()
        """Switches asked for and not yet confirmed."""
        self.modes: dict[str, str | None] = {}
        """Each switch's mode as the router last said ("off", "single", "multi"); None if it has not."""
        self.holders: dict[str, str | None] = {}
        """In single mode, the LAN client holding the protocol (from status)."""
        self.nat: dict | None = None
        """The NAT behaviour new sessions get (``status()["nat"]``, ``profile_changed``)."""
        self.rules: dict | None = None
        """The access rules in brief: ``{"default_action", "count"}``."""
        self.flow_ids: dict[str, set[int]] = {}
        """The ids of each protocol's own flows (calls, tunnels, associations), for every protocol described."""
        self.recognisers: dict[str, Recogniser] = {}
        """The protocols the router recognises without a helper, in its order (``describe``)."""
        self.recognised_ids: dict[str, set[int]] = {}
        """The ids of the NAT sessions recognised as each such protocol, for every name that has some."""
        self.connected = False
        self.link_detail = "connecting"
        self.uptime: float | None = None
        self._uptime_at = 0.0
        self.status: dict = {}
        self.rates = Rates()
        self.expected: int | None = None
        """The seq the next event should carry; None before subscribing."""
        self.synced = False
        """A snapshot has been loaded on this connection."""
        self.events_applied = 0
        self.log: deque[LogEntry] = deque(maxlen=LOG_LENGTH)
        self._new_log: list[LogEntry] = []
        self._closed: dict[int, float] = {}
        self._changes = Changes(reset=True)
        self._resync: str | None = None
        self._unknown_resync_at = float("-inf")
        self.version = 0
        """Grows on every change a screen update should show."""

    # -- the link ---------------------------------------------------------------------------------

    def link_up(self, now: float) -> None:
        self.connected, self.link_detail = True, "connected"
        self.note(now, "link", "connected")

    def link_down(self, reason: str, now: float) -> None:
        was = self.connected
        self.connected, self.synced, self.expected = False, False, None
        self.link_detail = reason
        self.pending.clear()
        if was:
            self.note(now, "link", f"disconnected: {reason}")
        self.version += 1

    def describe(self, helpers: list | None, now: float, recognisers: list | None = None) -> None:
        """The router's protocols (``version()["helpers"]``, at every connection; None from a router that sends
        none, which then shows no switches) and its recognisers (``version()["recognisers"]``: the titles of
        the sessions it recognised).  New protocols sort the table again: flows and NAT sessions by them."""
        if helpers is None:
            self.note(now, "error", "the router describes no VPN protocols (it is older than this dashboard): "
                                    "no switches, no VPN sessions")
        protocols, notes = read_protocols(helpers)
        known, more = read_recognisers(recognisers)
        for text in notes + more:
            self.note(now, "error", text)
        if known != self.recognisers:
            self.recognisers = known
            self._changes.reset = True
            self.version += 1
        if protocols == self.protocols:
            return
        self.protocols, self.protos = protocols, flow_protos(protocols)
        for session in self.sessions.values():
            session.classify(self.protos)
        self._recount()
        self._changes = Changes(reset=True)
        self.version += 1

    def subscribed(self, seq: int, now: float) -> None:
        self.expected, self.synced = seq, False

    def load_snapshot(self, sessions: list[dict], now: float) -> None:
        """Replace the table with the router's (after subscribing, after a gap, after a reconnect)."""
        self.sessions = {data["id"]: Session(data, now, self.protos) for data in sessions}
        self._recount()
        self._changes = Changes(reset=True)
        self.synced = True
        self.version += 1

    def take_resync(self) -> str | None:
        """Why the table should be read again, once; None if it need not be."""
        reason, self._resync = self._resync, None
        return reason

    def take_changes(self) -> Changes:
        changes, self._changes = self._changes, Changes()
        return changes

    def take_log(self) -> list[LogEntry]:
        entries, self._new_log = self._new_log, []
        return entries

    def note(self, now: float, kind: str, text: str) -> None:
        entry = LogEntry(now, kind, text)
        self.log.append(entry)
        self._new_log.append(entry)
        if len(self._new_log) > LOG_LENGTH:
            del self._new_log[:-LOG_LENGTH]
        self.version += 1

    # -- status and switches ----------------------------------------------------------------------

    def apply_status(self, status: dict, now: float) -> None:
        self.status = status
        if "uptime" in status:
            self.uptime, self._uptime_at = float(status["uptime"]), now
        if isinstance(status.get("passthrough"), dict):
            self.set_switches(status["passthrough"], quiet=True)
            self._take_modes(status.get("passthrough_mode") or {}, status.get("passthrough_holder") or {})
        if isinstance(status.get("nat"), dict):
            self.nat = status["nat"]
        if isinstance(status.get("rules"), dict):
            self.rules = status["rules"]
        self.rates.sample(status.get("counters") or {}, self.uptime)

    @property
    def wan(self) -> dict:
        """``status()["wan"]`` (``schema.STATUS_WAN``); a plain IPv4 WAN's from a router that says none."""
        return schema.wan_of(self.status)

    @property
    def dataplane_path(self) -> str | None:
        """Which path forwards established flows: "fast" or "python" (``status()["dataplane"]``), None unknown."""
        dataplane = self.status.get("dataplane")
        return dataplane.get("path") if isinstance(dataplane, dict) else None

    def router_uptime(self, now: float) -> float | None:
        """The router's uptime, carried forward from the last status while connected."""
        if self.uptime is None:
            return None
        return self.uptime + (now - self._uptime_at if self.connected else 0.0)

    def set_switches(self, switches: dict, quiet: bool = False) -> None:
        """The switches as the router confirms them (a ``set_passthrough`` answer or a status)."""
        for name, on in switches.items():
            self.switches[name] = bool(on)
            if not quiet:
                self.pending.discard(name)

    def _take_modes(self, modes: dict, holders: dict) -> None:
        """A status's ``passthrough_mode`` and ``passthrough_holder`` (absent: modes unknown)."""
        for name in self.switches:
            mode = modes.get(name)
            self.modes[name] = mode if mode in schema.PASSTHROUGH_MODES else None
            self.holders[name] = holders.get(name) if mode == "single" else None

    def switch_answered(self, name: str, value, switches: dict) -> None:
        """The answer to ``set_passthrough [name, value]``: the switches, and the mode if the value named it."""
        self.set_switches(switches)
        if value in schema.PASSTHROUGH_MODES and switches.get(name) == (value != "off"):
            self._set_mode(name, value)
        self.version += 1

    def _set_mode(self, name: str, mode: str | None) -> None:
        self.modes[name] = mode
        if mode != "single":
            self.holders[name] = None

    def switch_mode(self, name: str) -> str | None:
        """"off", "single", "multi"; "on" if on in a mode not known yet; None before the first status."""
        on = self.switches.get(name)
        if on is None:
            return None
        if not on:
            return "off"
        mode = self.modes.get(name)
        return mode if mode in ("single", "multi") else "on"

    def rules_read(self, view: dict) -> None:
        """A ``rules`` answer: the brief the panes show follows it."""
        self.rules = {"default_action": view.get("default_action"), "count": len(view.get("rules") or ())}
        self.version += 1

    # -- events -----------------------------------------------------------------------------------

    def apply_events(self, events: list[dict], now: float) -> None:
        for event in events:
            seq = event.get("seq")
            if isinstance(seq, int) and self.expected is not None:
                if seq < self.expected:
                    continue                                            # rule 1
                if seq > self.expected:                                 # rule 2
                    self._ask_resync(f"events {self.expected} to {seq - 1} lost")
                self.expected = seq + 1
            handler = EVENT_HANDLERS.get(event.get("type"))
            if handler is not None:
                handler(self, event, now)
            self.events_applied += 1
        self._forget_closed(now)

    def _ask_resync(self, reason: str) -> None:
        if self._resync is None:
            self._resync = reason

    def _opened(self, event: dict, now: float) -> None:
        data = event.get("session") or {}
        if "id" not in data:
            return
        self._closed.pop(data["id"], None)
        self._upsert(data, now)
        self.note(now, "opened", f"opened {_session_text(data)}")

    def _closed_event(self, event: dict, now: float) -> None:
        data = event.get("session") or {}
        reason = event.get("reason", "")
        if "id" in data:
            self._remove(data["id"], now)
        self.note(now, "closed", f"closed {_session_text(data)}  {reason}".rstrip())

    def _switch(self, event: dict, now: float) -> None:
        name, on, mode = event.get("name"), bool(event.get("on")), event.get("mode")
        if isinstance(name, str):
            self.switches[name] = on
            self._set_mode(name, mode if mode in schema.PASSTHROUGH_MODES else None)
            self.pending.discard(name)
            self.version += 1
        self.note(now, "switch", fmt.switch_note(title(self.protocols, name), on, mode))

    def _profile(self, event: dict, now: float) -> None:
        """A profile applies to new sessions: the NAT behaviour shown follows; sessions up keep theirs."""
        nat = event.get("nat")
        if isinstance(nat, dict):
            self.nat = nat
        for line in fmt.profile_notes(str(event.get("name")), nat if isinstance(nat, dict) else {}):
            self.note(now, "profile", line)

    def _dropped(self, event: dict, now: float) -> None:
        suppressed = event.get("suppressed") or 0
        more = f"  (+{suppressed} not shown)" if suppressed else ""
        self.note(now, "drop", f"drop {event.get('reason')} on {event.get('port')}: {event.get('summary', '')}{more}")

    def _vpn(self, event: dict, now: float) -> None:
        """A helper's event: merge what it says of a known flow, or end the flow if it is one of the events
        its protocol ends flows with."""
        vpn, kind, flow_id = event.get("vpn"), event.get("event", ""), event.get("id")
        flow = self.sessions.get(flow_id) if isinstance(flow_id, int) else None
        protocol = self.protocols.get(vpn)
        if flow is not None and flow.vpn == vpn and protocol is not None:
            if kind in protocol.ending_events:
                self._remove(flow_id, now)
            else:
                merged = protocol.merge(flow.fields, event)
                if merged:
                    flow.fields.update(merged)
                    self._changes.replaced.add(flow_id)
        self.note(now, "drop" if kind in REFUSALS else "vpn", fmt.vpn_note(event, title(self.protocols, vpn)))

    def _updated(self, event: dict, now: float) -> None:
        sessions, changed = self.sessions, self._changes.changed
        unknown = None
        for data in event.get("sessions") or ():
            sid = data.get("id")
            session = sessions.get(sid)
            if session is not None:
                session.update_counters(data, now)
                changed.add(sid)
            elif sid not in self._closed and unknown is None:
                unknown = sid
        if unknown is not None and self.synced and now - self._unknown_resync_at >= UNKNOWN_RESYNC_INTERVAL:
            self._unknown_resync_at = now
            self._ask_resync(f"session {unknown} was never announced")
        self.version += 1

    def confirm_closed(self, sid: int, now: float) -> None:
        """The router answered ``close_session`` with success: the session or flow is gone."""
        if sid in self.sessions:
            self._remove(sid, now)

    # -- the table --------------------------------------------------------------------------------

    def _upsert(self, data: dict, now: float) -> None:
        sid = data["id"]
        session = self.sessions.get(sid)
        if session is None:
            session = self.sessions[sid] = Session(data, now, self.protos)
            if session.flow:
                self.flow_ids.setdefault(session.vpn, set()).add(sid)
            elif session.recognised:
                self.recognised_ids.setdefault(session.recognised, set()).add(sid)
            self._changes.added.add(sid)
            self._changes.removed.discard(sid)
        else:
            was = session.flow, session.recognised
            session.update(data, now, self.protos)
            if was != (session.flow, session.recognised):
                self._recount()
            self._changes.replaced.add(sid)
        self.version += 1

    def _remove(self, sid: int, now: float) -> None:
        self._closed[sid] = now
        session = self.sessions.pop(sid, None)
        if session is None:
            return
        if session.flow:
            self.flow_ids[session.vpn].discard(sid)
        elif session.recognised:
            self._forget_recognised(session.recognised, sid)
        self._changes.removed.add(sid)
        self._changes.added.discard(sid)
        self._changes.changed.discard(sid)
        self._changes.replaced.discard(sid)
        self.version += 1

    def _recount(self) -> None:
        flow_ids = {name: set() for name in self.protocols}
        recognised_ids: dict[str, set[int]] = {}
        for session in self.sessions.values():
            if session.flow:
                flow_ids.setdefault(session.vpn, set()).add(session.id)
            elif session.recognised:
                recognised_ids.setdefault(session.recognised, set()).add(session.id)
        self.flow_ids, self.recognised_ids = flow_ids, recognised_ids

    def _forget_recognised(self, name: str, sid: int) -> None:
        ids = self.recognised_ids.get(name)
        if ids is not None:
            ids.discard(sid)
            if not ids:
                del self.recognised_ids[name]

    def recognised_groups(self) -> list[tuple[str, set[int]]]:
        """(name, ids) of each recognised protocol that has sessions: the router's recognisers in its order,
        then any name it did not describe."""
        ids = self.recognised_ids
        order = [name for name in self.recognisers if name in ids] + sorted(set(ids) - set(self.recognisers))
        return [(name, ids[name]) for name in order]

    @property
    def flow_counts(self) -> dict[str, int]:
        """How many flows each protocol has: the switches' live counts."""
        return {name: len(ids) for name, ids in self.flow_ids.items()}

    @property
    def nat_count(self) -> int:
        return len(self.sessions) - sum(len(ids) for ids in self.flow_ids.values())

    def _forget_closed(self, now: float) -> None:
        if len(self._closed) > 1000 or (self._closed and now - next(iter(self._closed.values())) > CLOSED_MEMORY):
            self._closed = {sid: t for sid, t in self._closed.items() if now - t <= CLOSED_MEMORY}


EVENT_HANDLERS = {
    "session_opened": Model._opened,
    "session_closed": Model._closed_event,
    "switch_changed": Model._switch,
    "packet_dropped": Model._dropped,
    "vpn": Model._vpn,
    "sessions_updated": Model._updated,
    "profile_changed": Model._profile,
}
"""Event types (``schema.EVENT_TYPES``) to what they do to the model."""

REFUSALS = frozenset({"refused_single", "denied"})
"""``vpn`` events of an attempt the router refused (single passthrough held, or an access rule): logged as drops."""


def _session_text(data: dict) -> str:
    vpn = f" [{data['vpn']}]" if data.get("vpn") else f" ({data['recognised']})" if data.get("recognised") else ""
    return (f"#{data.get('id')} {data.get('proto', '?')} {data.get('inside', '')} -> {data.get('outside', '')} "
            f"-> {data.get('remote', '')}{vpn}")

