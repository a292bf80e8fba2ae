"""What the control socket reads of the router: its status, its sessions and flows as ``SessionInfo``, and the
captures it starts.

A part of ``Router`` (see ``contract.py``); nothing here runs per frame.
"""

from __future__ import annotations

from ..config_wan import IPV4_STATUS
from ..helpers.base import Flow
from ..packet.frame import ip_str
from .contract import LAN, PORT_NAMES, WAN, RouterCore
from .events import SessionInfo


class ControlViews(RouterCore):
    """Status, sessions, captures."""

    def status(self, now: float) -> dict:
        self.counters["events_lost"] = self.events.lost
        return {
            "passthrough": dict(self.switches),
            "passthrough_mode": dict(self.modes),
            "passthrough_holder": {vpn: ip_str(h) if (h := self.admission.holder(vpn)) is not None
                                   and self.modes[vpn] == "single" else None for vpn in self.modes},
            "nat": self.nat.behaviour.to_dict(),
            "rules": {"default_action": self.admission.default_action, "count": len(self.admission.rules)},
            "counters": dict(self.counters),
            "uptime": round(now - self.started, 3) if self.started is not None else 0.0,
            "sessions": len(self.nat),
            "mappings": len(self.nat.mappings),
            "arp": {PORT_NAMES[p]: {ip_str(ip): e.mac.hex(":") for ip, e in self.arp[p].cache.items()}
                    for p in (LAN, WAN)},
            "ports": {PORT_NAMES[p]: {"address": f"{ip_str(c.address)}/{c.prefix_len}", "mac": c.mac.hex(":"),
                                      "mtu": c.mtu, "tap": c.tap} for p, c in enumerate(self.ports)},
            "limits": {"sessions": self.config.limits.sessions,
                       "sessions_per_host": self.config.limits.sessions_per_host},
            "dataplane": self.dataplane_status(),
            "wan": self.wan_status(),
        }

    def wan_status(self) -> dict:
        """``status()["wan"]`` (``schema.STATUS_WAN``): a plain IPv4 WAN here; ``softwire`` tells its own."""
        return dict(IPV4_STATUS)

    def dataplane_status(self) -> dict:
        """Which path forwards: "python" here, with why (``router.fastpath.FastPathRouter`` says "fast")."""
        return {"path": "python", "why": self.python_only}

    def session_infos(self, now: float) -> list:
        return [self.info_of(ref, now) for ref in self.session_refs()]

    def session_refs(self) -> list:
        """Every NAT session and helper flow, cheaply (a list copy): the control socket converts them a chunk
        at a time with ``info_of``."""
        refs = list(self.nat.out_sessions.values())
        for helper in self.helpers:
            refs += helper.flows()
        return refs

    def info_of(self, ref, now: float) -> SessionInfo:
        return self.flow_info(ref, now) if isinstance(ref, Flow) else ref.info(now, self.wan_ip)

    @staticmethod
    def brief(obj, now: float) -> tuple:
        """(id, state, idle, packets in, packets out, bytes in, bytes out): what ``sessions_updated`` tells."""
        return (obj.id, obj.view_state(), round(max(0.0, now - obj.last_seen), 3), *obj.totals())

    def find_session(self, session_id: int):
        """A live NAT session or helper flow by id (cold path: a scan of the NAT's sessions)."""
        for helper in self.helpers:
            flow = helper.live.get(session_id)
            if flow is not None:
                return flow
        return next((s for s in self.nat.out_sessions.values() if s.id == session_id), None)

    def start_capture(self, session_id: int, tap) -> object:
        """Hand a copy of each frame a session or flow forwards to ``tap`` (a callable), until ``stop_capture``;
        the session or flow captured. ``LookupError`` if there is none, ``ValueError`` if it is captured already."""
        target = self.find_session(session_id)
        if target is None:
            raise LookupError(f"no session or flow with id {session_id}")
        if target.tap is not None:
            raise ValueError(f"session {session_id} is being captured already")
        target.tap = tap
        return target

    def stop_capture(self, target, tap) -> None:
        """The capture ``tap`` of ``target`` ends (if it is still the one running)."""
        if target.tap is tap:
            target.tap = None

    def flow_info(self, flow: Flow, now: float) -> SessionInfo:
        """A helper's flow as a session: its protocol's IDs stand where ports would."""
        packets_in, packets_out, bytes_in, bytes_out = flow.totals()
        return SessionInfo(
            id=flow.id, proto=flow.proto, inside=flow.inside(), outside=flow.outside(self.wan_ip),
            remote=flow.remote(), state=flow.state(), idle=round(max(0.0, now - flow.last_seen), 3),
            age=round(max(0.0, now - flow.created), 3), packets_in=packets_in, packets_out=packets_out,
            bytes_in=bytes_in, bytes_out=bytes_out, vpn=flow.vpn, details=tuple(flow.details().items()))
