"""L2TP passthrough (RFC 2661, UDP 1701) for many LACs to one LNS, each keeping port 1701.

Theory of operation
-------------------
Every L2TP header carries the *receiver's* Tunnel ID and Session ID (RFC 2661
§3.1); each side announces its own IDs in the Assigned Tunnel ID (AVP 9) and
Assigned Session ID (AVP 14) of its control messages (§4.4.3, §4.4.4).  So
messages from an LNS name the LAC's Tunnel ID, and two LACs behind one NAT
that chose the same Tunnel ID could not be told apart.

With ``[l2tp] port = "preserve"`` (the default) every LAC keeps source port
1701 on the outside, since many LNSs and the firewalls before them accept
nothing else: the NAT shares outside port 1701, and inbound messages from an
LNS are demultiplexed by their header Tunnel ID (``demux``).  To keep that
ID unique per (router address, LNS), the inside host's Assigned Tunnel ID is
replaced, in place, by one the router allocates (its own if free, else a
random one) and the header Tunnel ID of every message coming back is
restored.  Session IDs are scoped by their tunnel and never change.  The
same rule serves an LNS on the LAN behind a port forward.  A hidden AVP
(H bit, §4.3) is never modified: such a tunnel keeps its ID, and collides if
another has it.  ``"translate"`` is plain NAPT, plus this view.

The helper follows the tunnel (SCCRQ, SCCRP, SCCCN, HELLO, StopCCN) and
session (ICRQ/ICRP/ICCN, OCRQ/OCRP/OCCN, CDN) state machines for ``ctl
sessions`` and events.  Other versions (L2TPv3 over UDP, RFC 3931) cross as
plain UDP with a counter.  Malformed messages are forwarded unmodified, with
a counter and a rate-limited event.
"""

from __future__ import annotations

from functools import partial

from ..packet.frame import IpProto, ip_str
from .base import Helper, Verdict
from .l2tp_wire import (CONNECTED, REPLIES, REQUESTS, UDP_HEADER, L2tpMessageType as M, Malformed, Message,
                        OtherVersion, data_tunnel_id, parse_avps, parse_header, write_u16)
from .offload import SPLIT_L2TP_TUNNEL, Offload
from .l2tp_tunnel import STOP_GRACE, L2tpSession, Tunnel, TunnelState, restored_tunnel, trim, tunnel_record
from .records import BadRecord, Record, Restore
from .spec import FlowView, ListEvent, Option, Timeout

L2TP_PORT = 1701


class L2tpHelper(Helper):
    name = "l2tp"
    title = "L2TP"
    key = "l"
    flow_noun = "tunnel"
    flow_nouns = ("tunnel", "tunnels")
    flow_proto = "l2tp"
    view = FlowView(
        fields=("client", "lns", "tunnel_id", "translated_tunnel_id", "peer_tunnel_id", "sessions", "host_name"),
        client="client", server="lns",
        ids="tun {tunnel_id}>{translated_tunnel_id}<>{peer_tunnel_id}"
            "{sessions:each| ses |,|[session_id]<>[peer_session_id]}",
        legend="Tunnel ID client>translated<>LNS, sessions client<>LNS", fixed=("sessions",),
        ending_events=("tunnel_down",),
        list_events={"session_up": ListEvent("sessions", "session_id", ("session_id", "peer_session_id", "state")),
                     "session_down": ListEvent("sessions", "session_id", add=False)})
    options = (Option("port", "preserve", ("preserve", "translate"),
                      '"preserve": every LAC keeps UDP 1701 outside, demultiplexed by Tunnel ID; "translate": '
                      'plain NAPT.'),)
    timeouts = (Timeout("l2tp", 600.0, "Idle lifetime of an L2TP tunnel and of its NAT sessions on UDP 1701 "
                                       "(HELLOs come every 60 s)."),)
    counters = ("l2tp_tunnels_up", "l2tp_tunnels_down", "l2tp_sessions_up", "l2tp_sessions_down",
                "l2tp_malformed", "l2tp_hidden_avp", "l2tp_other_version", "l2tp_tunnel_id_collision")

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self.preserve = self.settings["port"] == "preserve"
        self.by_translated: dict[tuple[int, int], Tunnel] = {}
        """(remote address, translated Tunnel ID) -> tunnel: the header Tunnel ID of messages from the WAN."""
        self.by_peer: dict[tuple[int, int, int], Tunnel] = {}
        """(inside, remote, remote peer's Tunnel ID) -> tunnel: the header Tunnel ID of messages from the LAN."""
        self.by_inside: dict[tuple[int, int, int], Tunnel] = {}
        """(inside, remote, inside host's Tunnel ID) -> tunnel: SCCRQ retransmissions."""
        self.hidden: set[Tunnel] = set()
        """Tunnels whose Assigned Tunnel ID was hidden and that the LNS has not yet named."""
        self.pairs: dict[tuple[int, int], int] = {}
        """(inside, remote) -> live NAT sessions between them: tunnels end with the last."""

    # -- the helper interface ---------------------------------------------------------------------

    def attaches_to(self, proto, inside_port, remote_port) -> bool:
        return proto == IpProto.UDP and L2TP_PORT in (inside_port, remote_port)

    def shares_port(self, proto, inside_port, remote_port) -> bool:
        return self.preserve and inside_port == L2TP_PORT and remote_port == L2TP_PORT

    def timeout(self, session) -> float | None:
        return self.ctx.timeouts.l2tp

    def packet(self, session, frame, ip, l4, outbound, now) -> Verdict:
        if session.helper_state is None:
            pair = session.helper_state = (session.inside_ip, session.remote_ip)
            self.pairs[pair] = self.pairs.get(pair, 0) + 1
        at = l4 + UDP_HEADER
        header = self._header(frame, at, session, now)
        if header is None:
            return Verdict.FORWARD
        control, tunnel_at, avps, end = header
        tunnel_id = frame[tunnel_at] << 8 | frame[tunnel_at + 1]
        if outbound:
            tunnel = self.by_peer.get((session.inside_ip, session.remote_ip, tunnel_id)) if tunnel_id else None
        else:
            tunnel = self._by_own(session.inside_ip, session.remote_ip, tunnel_id) if tunnel_id else None
            if tunnel is None and tunnel_id:
                tunnel = self._pending_hidden(session.inside_ip, session.remote_ip)
                if tunnel is not None:
                    self._adopt(tunnel, tunnel_id, now)
            if tunnel is not None and tunnel.translated != tunnel.tunnel_id:
                write_u16(frame, l4, tunnel_at, tunnel.tunnel_id)   # the inside host's own ID, restored
        if control and avps < end:
            tunnel = self._control(session, frame, l4, tunnel_at, avps, end, tunnel, outbound, now)
        if tunnel is not None:
            tunnel.last_seen = now
            if outbound:
                tunnel.packets_out += 1
                tunnel.bytes_out += end - at
            else:
                tunnel.packets_in += 1
                tunnel.bytes_in += end - at
        return Verdict.FORWARD

    def demux(self, candidates, frame, ip, l4, now):
        """Inbound to the shared port 1701: the host whose (translated) Tunnel ID the header names."""
        at = l4 + UDP_HEADER
        remote = int.from_bytes(frame[ip + 12:ip + 16], "big")
        header = self._header(frame, at, candidates[0], now)
        if header is None:
            return None
        tunnel_at = header[1]
        tunnel = self.by_translated.get((remote, frame[tunnel_at] << 8 | frame[tunnel_at + 1]))
        if tunnel is None:     # perhaps the reply to a hidden-ID SCCRQ: the host that sent the newest one
            pending = [t for s in candidates if (t := self._pending_hidden(s.inside_ip, remote)) is not None]
            if not pending:
                return None
            tunnel = max(pending, key=lambda t: t.created)
        return next((s for s in candidates if s.inside_ip == tunnel.inside_ip), None)

    def _by_own(self, inside: int, remote: int, header_tunnel_id: int) -> Tunnel | None:
        """The tunnel a message from the WAN names: by the translated ID where the port is shared."""
        if self.preserve:
            return self.by_translated.get((remote, header_tunnel_id))
        return self.by_inside.get((inside, remote, header_tunnel_id))

    def closed(self, session, now) -> None:
        pair = session.helper_state
        if pair is None:
            return
        left = self.pairs.get(pair, 1) - 1
        if left:
            self.pairs[pair] = left
            return
        self.pairs.pop(pair, None)
        for tunnel in [t for t in self.live.values() if (t.inside_ip, t.remote_ip) == pair]:
            self._end(tunnel, "nat_session_closed", now)

    def describe(self, session):
        pair = session.helper_state
        return [("tunnels", sum(1 for t in self.live.values() if (t.inside_ip, t.remote_ip) == pair))]

    def offload(self, session, outbound, frame, l4):
        """Data messages of a known tunnel, told apart by the Tunnel ID in their header: the LNS's outbound;
        inbound the translated one, which arrives and is replaced by the inside host's own (as ``packet`` does).
        Control messages never."""
        tunnel_id = data_tunnel_id(frame, l4 + UDP_HEADER)
        if not tunnel_id:
            return None
        inside, remote = session.inside_ip, session.remote_ip
        if outbound:
            tunnel, arrives, restore = self.by_peer.get((inside, remote, tunnel_id)), tunnel_id, None
        else:
            tunnel = self.by_inside.get((inside, remote, tunnel_id))
            arrives = tunnel.translated if tunnel is not None else None
            if arrives is None or self._by_own(inside, remote, arrives) is not tunnel:
                return None
            restore = None if arrives == tunnel_id else tunnel_id
        if tunnel is None:
            return None
        return Offload(payload_id=arrives, split=SPLIT_L2TP_TUNNEL, restore=restore, owners=(tunnel,),
                       account=partial(tunnel.count, outbound), count_payload=True)

    # -- parsing (RFC 2661 §3.1, §4.1) ----------------------------------------------------------------

    def _header(self, frame, at: int, session, now: float):
        """(control?, offset of the Tunnel ID, first AVP, end of message), or None to forward unparsed."""
        try:
            return parse_header(frame, at)
        except OtherVersion:
            self.ctx.count("l2tp_other_version")
        except Malformed as exc:
            self._malformed(str(exc), session, now)
        return None

    def _avps(self, frame, i: int, end: int, session, now: float) -> Message | None:
        try:
            return parse_avps(frame, i, end)
        except Malformed as exc:
            return self._malformed(str(exc), session, now)

    def _malformed(self, what: str, session, now: float) -> None:
        where = f"{ip_str(session.inside_ip)}:{session.inside_port} <-> {ip_str(session.remote_ip)}:" \
                f"{session.remote_port}"
        self.ctx.problem("l2tp_malformed", f"{what} on {where}; forwarded unmodified", now)
        return None

    # -- control messages: tunnels and sessions ------------------------------------------------------

    def _control(self, session, frame, l4, tunnel_at, avps, end, tunnel, outbound, now) -> Tunnel | None:
        msg = self._avps(frame, avps, end, session, now)
        if msg is None:
            return tunnel
        kind = msg.type
        session_id = frame[tunnel_at + 2] << 8 | frame[tunnel_at + 3]
        if kind == M.SCCRQ:
            tunnel = self._sccrq(session, frame, l4, msg, outbound, now)
        elif kind == M.SCCRP and tunnel is not None:
            if outbound:
                self._assign(session, tunnel, frame, l4, msg, now)
            elif msg.tunnel_id is not None:
                self._set_peer(tunnel, msg.tunnel_id)
            tunnel.tunnel_state = TunnelState.REPLIED
        elif tunnel is None:
            return None
        elif kind == M.SCCCN and tunnel.tunnel_state is not TunnelState.ESTABLISHED:
            tunnel.tunnel_state = TunnelState.ESTABLISHED
            self.ctx.event("tunnel_up", tunnel.ids(), now, counter="l2tp_tunnels_up")
        elif kind == M.STOPCCN:    # it names the sender's Tunnel ID again (§4.4.3): translated like SCCRQ's
            if outbound and msg.tunnel_id == tunnel.tunnel_id and tunnel.translated != tunnel.tunnel_id \
                    and not msg.tunnel_id_hidden:
                write_u16(frame, l4, msg.tunnel_id_at, tunnel.translated)
            self._stop(tunnel, now)
        elif kind in REQUESTS and msg.session_id is not None:
            self._request(tunnel, msg.session_id, outbound)
        elif kind in REPLIES and msg.session_id is not None:
            self._reply(tunnel, msg.session_id, session_id, outbound)
        elif kind in CONNECTED:     # the header names the receiver's Session ID
            found = self._session(tunnel, session_id, by_own=not outbound)
            if found is not None and found.state != "established":
                found.state = "established"
                self.ctx.event("session_up", {**tunnel.ids(), **found.view()}, now, counter="l2tp_sessions_up")
        elif kind == M.CDN:
            own = msg.session_id if outbound else session_id
            found = self._session(tunnel, own, by_own=True)
            if found is not None:
                self._end_session(tunnel, found, "call disconnect notify", now)
        return tunnel

    def _sccrq(self, session, frame, l4, msg: Message, outbound: bool, now: float) -> Tunnel | None:
        inside, remote = session.inside_ip, session.remote_ip
        if outbound and msg.tunnel_id_hidden:
            return self._hidden_sccrq(inside, remote, msg, now)
        if msg.tunnel_id is None:
            return None
        if not outbound:      # a remote LAC asks an inside LNS: its ID is the peer's
            tunnel = self.by_peer.get((inside, remote, msg.tunnel_id))
            if tunnel is None and not self.ctx.room(inside, now):
                return None
            if tunnel is None:
                tunnel = self._new(inside, remote, False, now)
                self._set_peer(tunnel, msg.tunnel_id)
                tunnel.host_name = msg.host_name
            return tunnel
        tunnel = self.by_inside.get((inside, remote, msg.tunnel_id))
        if tunnel is not None and tunnel.tunnel_state is TunnelState.STOPPING:
            self._end(tunnel, "reopened", now)     # the same ID again after StopCCN: a new tunnel
            tunnel = None
        if tunnel is None:
            if not self.ctx.room(inside, now):
                return None
            tunnel = self._new(inside, remote, True, now)
            tunnel.host_name = msg.host_name
        self._assign(session, tunnel, frame, l4, msg, now)
        return tunnel

    def _hidden_sccrq(self, inside: int, remote: int, msg: Message, now: float) -> Tunnel | None:
        """An SCCRQ whose Assigned Tunnel ID is hidden: untranslated, its ID learned from the LNS's reply."""
        tunnel = self._pending_hidden(inside, remote)
        if tunnel is None and not self.ctx.room(inside, now):
            return None
        if tunnel is None:
            tunnel = self._new(inside, remote, True, now)
            tunnel.host_name = msg.host_name
            self.hidden.add(tunnel)
            self.ctx.problem("l2tp_hidden_avp", "a hidden Assigned Tunnel ID cannot be translated; the tunnel "
                             "keeps its own ID", now, **tunnel.ids())
        return tunnel

    def _pending_hidden(self, inside: int, remote: int) -> Tunnel | None:
        """The newest tunnel of this pair whose (hidden) ID the LNS has not yet named (cold path)."""
        pending = [t for t in self.hidden if t.inside_ip == inside and t.remote_ip == remote]
        return max(pending, key=lambda t: t.created) if pending else None

    def _adopt(self, tunnel: Tunnel, own: int, now: float) -> None:
        """The LNS names a hidden-ID tunnel's own ID in its header: the tunnel keeps it, untranslated."""
        self.ctx.withdraw(tunnel)
        self.hidden.discard(tunnel)
        tunnel.tunnel_id = tunnel.translated = own
        self.by_inside[(tunnel.inside_ip, tunnel.remote_ip, own)] = tunnel
        if self.preserve:
            if (tunnel.remote_ip, own) in self.by_translated:
                self.ctx.problem("l2tp_tunnel_id_collision", f"Tunnel ID {own} towards {ip_str(tunnel.remote_ip)} "
                                 "is taken and cannot be translated (hidden)", now, **tunnel.ids())
            self.by_translated.setdefault((tunnel.remote_ip, own), tunnel)

    def _assign(self, session, tunnel: Tunnel, frame, l4, msg: Message, now: float) -> None:
        """The inside host announces its Tunnel ID: keep it or translate it, and rewrite the AVP."""
        own = msg.tunnel_id
        if own is None:
            return
        if tunnel.tunnel_id != own:
            self._unregister(tunnel)            # and what the fast path has of it
            tunnel.tunnel_id = own
            tunnel.translated = self._allocate(tunnel, own)
            self.by_inside[(tunnel.inside_ip, tunnel.remote_ip, own)] = tunnel
            if self.preserve:
                self.by_translated.setdefault((tunnel.remote_ip, tunnel.translated), tunnel)
        if tunnel.translated != own:
            write_u16(frame, l4, msg.tunnel_id_at, tunnel.translated)

    def _allocate(self, tunnel: Tunnel, wanted: int) -> int:
        """A Tunnel ID unique towards the remote peer: the inside host's own if free, else a random one."""
        taken = self.by_translated
        remote = tunnel.remote_ip
        if not self.preserve:      # the NAT's ports tell tunnels apart: nothing to translate
            return wanted
        if (remote, wanted) not in taken:
            return wanted
        rng = self.ctx.rng
        for _ in range(64):
            candidate = rng.randint(1, 65535)
            if (remote, candidate) not in taken:
                return candidate
        return next((c for c in range(1, 65536) if (remote, c) not in taken), wanted)

    def _set_peer(self, tunnel: Tunnel, peer: int) -> None:
        self.ctx.withdraw(tunnel)
        if tunnel.peer_tunnel_id is not None:
            self.by_peer.pop((tunnel.inside_ip, tunnel.remote_ip, tunnel.peer_tunnel_id), None)
        tunnel.peer_tunnel_id = peer
        self.by_peer[(tunnel.inside_ip, tunnel.remote_ip, peer)] = tunnel

    def _request(self, tunnel: Tunnel, assigned: int, outbound: bool) -> None:
        """ICRQ/OCRQ: the sender announces its Session ID."""
        if outbound:
            tunnel.sessions.setdefault(assigned, L2tpSession(assigned, None))
        else:
            tunnel.pending.setdefault(assigned, L2tpSession(None, assigned))
        trim(tunnel)

    def _reply(self, tunnel: Tunnel, assigned: int, header_session: int, outbound: bool) -> None:
        """ICRP/OCRP: the sender announces its Session ID; the header names the requester's."""
        if outbound:          # the inside host answers the remote peer's request
            found = tunnel.pending.pop(header_session, None) or L2tpSession(None, header_session)
            found.session_id = assigned
            tunnel.sessions[assigned] = found
            trim(tunnel)
        else:
            found = tunnel.sessions.get(header_session)
            if found is not None:
                found.peer_session_id = assigned

    @staticmethod
    def _session(tunnel: Tunnel, session_id: int | None, by_own: bool) -> L2tpSession | None:
        """A session by the inside host's Session ID (``by_own``) or by the remote peer's."""
        if session_id is None:
            return None
        if by_own:
            return tunnel.sessions.get(session_id)
        return next((s for s in tunnel.sessions.values() if s.peer_session_id == session_id), None)

    def _end_session(self, tunnel: Tunnel, found: L2tpSession, reason: str, now: float) -> None:
        tunnel.sessions.pop(found.session_id, None)
        if found.state == "established":
            self.ctx.event("session_down", {**tunnel.ids(), **found.view(), "reason": reason}, now,
                           counter="l2tp_sessions_down")

    # -- tunnels -------------------------------------------------------------------------------------

    def _new(self, inside: int, remote: int, inside_is_lac: bool, now: float) -> Tunnel:
        tunnel = Tunnel(self.ctx.new_id(), inside, remote, inside_is_lac, self.ctx.wan_ip, now)
        self.opened(tunnel, now)
        return tunnel

    def _unregister(self, tunnel: Tunnel) -> None:
        self.ctx.withdraw(tunnel)
        if tunnel.tunnel_id is not None:
            key = (tunnel.inside_ip, tunnel.remote_ip, tunnel.tunnel_id)
            if self.by_inside.get(key) is tunnel:
                del self.by_inside[key]
        if tunnel.translated is not None and self.by_translated.get((tunnel.remote_ip, tunnel.translated)) is tunnel:
            del self.by_translated[(tunnel.remote_ip, tunnel.translated)]

    def _forget(self, tunnel: Tunnel) -> None:
        """The tunnel out of every table."""
        tunnel.closed = True
        self.hidden.discard(tunnel)
        self._unregister(tunnel)
        if tunnel.peer_tunnel_id is not None:
            key = (tunnel.inside_ip, tunnel.remote_ip, tunnel.peer_tunnel_id)
            if self.by_peer.get(key) is tunnel:
                del self.by_peer[key]
        self.live.pop(tunnel.id, None)

    def _stop(self, tunnel: Tunnel, now: float) -> None:
        """StopCCN: the tunnel and its sessions are down; its IDs stay known for the acknowledgement."""
        if tunnel.tunnel_state is TunnelState.STOPPING:
            return
        for found in list(tunnel.sessions.values()):
            self._end_session(tunnel, found, "stop control connection", now)
        if tunnel.tunnel_state is TunnelState.ESTABLISHED:
            self.ctx.event("tunnel_down", {**tunnel.ids(), "reason": "stop control connection"}, now,
                           counter="l2tp_tunnels_down")
        tunnel.tunnel_state = TunnelState.STOPPING
        tunnel.stop_deadline = now + STOP_GRACE

    def _end(self, tunnel: Tunnel, reason: str, now: float) -> None:
        if tunnel.closed:
            return
        tunnel.closed = True
        self.ended(tunnel, reason, now)
        for found in list(tunnel.sessions.values()):
            self._end_session(tunnel, found, reason, now)
        self._forget(tunnel)
        if tunnel.tunnel_state is TunnelState.ESTABLISHED:
            self.ctx.event("tunnel_down", {**tunnel.ids(), "reason": reason}, now, counter="l2tp_tunnels_down")

    # -- time, switch and views ---------------------------------------------------------------------

    def expire(self, now: float) -> None:
        limit = now - self.ctx.timeouts.l2tp
        for tunnel in [t for t in self.live.values()
                       if t.last_seen <= limit or (t.stop_deadline and t.stop_deadline <= now)]:
            self._end(tunnel, "idle", now)

    def next_deadline(self) -> float | None:
        if not self.live:
            return None
        timeout = self.ctx.timeouts.l2tp
        return min(t.stop_deadline or t.last_seen + timeout for t in self.live.values())

    def end_flow(self, flow: Tunnel, reason: str, now: float) -> None:
        self._end(flow, reason, now)

    def tables(self) -> dict:
        return {**super().tables(), "by_translated": self.by_translated, "by_peer": self.by_peer,
                "by_inside": self.by_inside, "hidden": self.hidden, "pairs": self.pairs}

    # -- the state file: tunnels are the helper's records; a NAT session keeps only its pair ------------

    def flow_records(self) -> list[dict]:
        return [tunnel_record(t, t in self.hidden) for t in self.live.values()]

    def restore_flows(self, records: list, restore: Restore) -> None:
        restore.each(self.flow_kind, records, lambda r: self._restore_tunnel(r, restore))

    def _restore_tunnel(self, r: Record, restore: Restore) -> Tunnel:
        tunnel, hidden, peer = restored_tunnel(r, restore, self.ctx.wan_ip)
        inside, remote, own = tunnel.inside_ip, tunnel.remote_ip, tunnel.tunnel_id
        if own is not None and (inside, remote, own) in self.by_inside:
            raise BadRecord(f"Tunnel ID {own} of {ip_str(inside)} twice")
        if peer is not None and (inside, remote, peer) in self.by_peer:
            raise BadRecord(f"peer Tunnel ID {peer} twice")
        restore.take_flow(inside)
        tunnel.id = restore.claim(r)
        self.adopt(tunnel)
        if hidden:
            self.hidden.add(tunnel)
        if own is not None:
            self.by_inside[(inside, remote, own)] = tunnel
            if self.preserve:
                self.by_translated.setdefault((remote, tunnel.translated), tunnel)
        if peer is not None:
            self._set_peer(tunnel, peer)
        return tunnel

    def restore_session(self, session, record: Record | None, restore: Restore) -> None:
        pair = session.helper_state = (session.inside_ip, session.remote_ip)
        self.pairs[pair] = self.pairs.get(pair, 0) + 1

    def restore_done(self, restore: Restore) -> None:
        """A tunnel lives while its pair has a NAT session: one whose sessions were all left out goes too."""
        for tunnel in [t for t in self.live.values() if (t.inside_ip, t.remote_ip) not in self.pairs]:
            self._forget(tunnel)
            restore.undo(self.flow_kind, "no NAT session of its LAC and LNS was restored")
