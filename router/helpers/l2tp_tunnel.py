"""What the L2TP helper keeps of a tunnel (RFC 2661 §1.2: a tunnel between a LAC and an LNS, and its sessions)."""

from __future__ import annotations

from enum import Enum

from ..packet.frame import ip_str
from .base import Flow
from .records import BadRecord, Record, Restore, flow_record, restore_counters

MAX_SESSIONS = 1024
"""Sessions remembered per tunnel; a peer that opens more loses the oldest from the view."""
STOP_GRACE = 31.0
"""Seconds a tunnel's IDs stay known after StopCCN, so its acknowledgement and retransmissions still cross
(RFC 2661 §5.7: state is kept for a full retransmission cycle, 1 + 2 + 4 + 8 + 8 + 8 s by default)."""


class TunnelState(Enum):
    REQUESTED = "requested"
    REPLIED = "replied"
    ESTABLISHED = "established"
    STOPPING = "stopping"       # StopCCN sent: the IDs are kept until STOP_GRACE has passed


class L2tpSession:
    __slots__ = ("session_id", "peer_session_id", "state")

    def __init__(self, session_id: int | None, peer_session_id: int | None):
        self.session_id = session_id
        self.peer_session_id = peer_session_id
        self.state = "requested"

    def view(self) -> dict:
        return {"session_id": self.session_id, "peer_session_id": self.peer_session_id, "state": self.state}


class Tunnel(Flow):
    """One tunnel: the inside host's Tunnel ID, its translation, the remote peer's, and its sessions."""

    __slots__ = ("tunnel_id", "translated", "peer_tunnel_id", "inside_is_lac", "host_name", "tunnel_state",
                 "sessions", "pending", "stop_deadline")
    proto = "l2tp"
    vpn = "l2tp"

    def __init__(self, tid: int, inside_ip: int, remote_ip: int, inside_is_lac: bool, wan_ip: int, now: float):
        super().__init__(tid, inside_ip, remote_ip, wan_ip, now)
        self.tunnel_id: int | None = None
        self.translated: int | None = None
        self.peer_tunnel_id: int | None = None
        self.inside_is_lac = inside_is_lac
        self.host_name: str | None = None
        self.tunnel_state = TunnelState.REQUESTED
        self.sessions: dict[int, L2tpSession] = {}
        """The inside host's Session ID -> session."""
        self.pending: dict[int, L2tpSession] = {}
        """Sessions the remote peer requested, by its Session ID, until the inside host assigns its own."""
        self.stop_deadline = 0.0

    def inside(self) -> str:
        return f"{ip_str(self.inside_ip)}:{_opt(self.tunnel_id)}"

    def outside(self, wan_ip: int) -> str:
        return f"{ip_str(wan_ip)}:{_opt(self.translated)}"

    def remote(self) -> str:
        return f"{ip_str(self.remote_ip)}:{_opt(self.peer_tunnel_id)}"

    def state(self) -> str:
        return self.tunnel_state.value

    def ids(self) -> dict:
        lac, lns = (self.inside_ip, self.remote_ip) if self.inside_is_lac else (self.remote_ip, self.inside_ip)
        return {"id": self.id, "client": ip_str(lac), "lns": ip_str(lns), "tunnel_id": self.tunnel_id,
                "translated_tunnel_id": self.translated, "peer_tunnel_id": self.peer_tunnel_id}

    def tables(self) -> dict:
        return {"sessions": (self.sessions, MAX_SESSIONS), "pending": (self.pending, MAX_SESSIONS)}

    def count(self, outbound: bool, frames: int, octets: int, last: float) -> None:
        """Data messages the fast path forwarded: counted as the helper counts them (their L2TP length)."""
        if outbound:
            self.packets_out += frames
            self.bytes_out += octets
        else:
            self.packets_in += frames
            self.bytes_in += octets
        self.last_seen = last

    def details(self) -> dict:
        details = self.ids()
        del details["id"]
        sessions = [*self.sessions.values(), *self.pending.values()]
        return {**details, "sessions": [s.view() for s in sessions], "host_name": self.host_name}


TUNNEL_STATES = tuple(state.value for state in TunnelState)
SESSION_STATES = ("requested", "established")


def restore_sessions(r: Record, key: str, own_ids: bool) -> list[L2tpSession]:
    """A tunnel's sessions as [own Session ID, peer's Session ID, state] (``own_ids``: the first is required)."""
    made = []
    for entry in r.items(key, most=MAX_SESSIONS):
        if not (isinstance(entry, list) and len(entry) == 3 and entry[2] in SESSION_STATES
                and all(v is None or (isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 65535)
                        for v in entry[:2]) and entry[0 if own_ids else 1] is not None):
            raise BadRecord(f"an L2TP session in {key} is not [Session ID, peer Session ID, state]")
        session = L2tpSession(entry[0], entry[1])
        session.state = entry[2]
        made.append(session)
    return made


def trim(tunnel: Tunnel) -> None:
    """At most MAX_SESSIONS sessions per table of a tunnel: the oldest go first."""
    for table in (tunnel.sessions, tunnel.pending):
        while len(table) > MAX_SESSIONS:
            del table[next(iter(table))]


def _opt(value) -> str:
    return "" if value is None else str(value)


def tunnel_record(t: Tunnel, hidden: bool) -> dict:
    """A tunnel as the state file keeps it."""
    return {**flow_record(t), "tunnel_id": t.tunnel_id, "translated": t.translated,
            "peer_tunnel_id": t.peer_tunnel_id, "inside_is_lac": t.inside_is_lac, "host_name": t.host_name,
            "tunnel_state": t.tunnel_state.value, "hidden": hidden, "stop_deadline": t.stop_deadline,
            "sessions": [[s.session_id, s.peer_session_id, s.state] for s in t.sessions.values()],
            "pending": [[s.session_id, s.peer_session_id, s.state] for s in t.pending.values()]}


def restored_tunnel(r: Record, restore: Restore, wan_ip: int) -> tuple[Tunnel, bool, int | None]:
    """A tunnel as ``tunnel_record`` wrote it, checked field by field (``BadRecord``), with whether its
    Assigned Tunnel ID was hidden and the peer's Tunnel ID; its id is claimed by the caller."""
    inside, remote = restore.inside(r, "inside_ip"), restore.remote(r, "remote_ip")
    own, translated, peer = (r.optional_integer(key, 1, 65535) for key in ("tunnel_id", "translated",
                                                                           "peer_tunnel_id"))
    hidden = r.flag("hidden")
    if (own is None) != (translated is None) or (hidden and own is not None):
        raise BadRecord("its own and translated Tunnel IDs do not go together")
    sessions = {s.session_id: s for s in restore_sessions(r, "sessions", own_ids=True)}
    pending = {s.peer_session_id: s for s in restore_sessions(r, "pending", own_ids=False)}
    created, last_seen = restore.times(r)
    state = TunnelState(r.text("tunnel_state", "established", choices=TUNNEL_STATES))
    host_name, stop_deadline = r.optional_text("host_name"), r.time("stop_deadline", 0.0)
    tunnel = Tunnel(0, inside, remote, r.flag("inside_is_lac", True), wan_ip, created)
    tunnel.last_seen, tunnel.tunnel_state, tunnel.host_name = last_seen, state, host_name
    tunnel.stop_deadline, tunnel.sessions, tunnel.pending = stop_deadline, sessions, pending
    tunnel.tunnel_id, tunnel.translated = own, translated
    restore_counters(tunnel, r)
    return tunnel, hidden, peer
