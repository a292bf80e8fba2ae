"""PPTP passthrough (RFC 2637) for any number of calls, to any number of servers.

Theory of operation
-------------------
Each GRE packet carries the *receiver's* Call ID (RFC 2637 §4.1), so GRE
from a server to the router carries the inside peer's Call ID, and two
inside peers that chose the same Call ID could not be told apart.  This
helper therefore replaces the inside peer's Call ID, in every control
message that carries it, by one the router allocates, unique per (router
address, remote peer), and restores it in the other direction:

- a Call ID field holding the *sender's own* Call ID (OCRQ, OCRP, ICRQ, ICRP,
  CCRQ, CDN) is translated when the inside peer sends it;
- a field holding the *peer's* Call ID (OCRP, ICRP, ICCN, WEN, SLI) is
  restored when the remote peer sends it.

This works whichever side is the client: with a port forward of TCP 1723 to
a LAN server the same rule translates the server's Call IDs.  Rewrites are in
place, same length, so TCP sequence numbers never change.

GRE (protocol 47, RFC 2637 §4.1) is this helper's as an IP-protocol
handler: inbound it is demultiplexed by (remote address, translated Call ID)
and the inside Call ID restored, outbound it is matched by (inside address,
remote address, remote peer's Call ID); the data plane rewrites the address.

Message framing follows the control stream byte by byte (``tcpstream``), so
messages may span segments or share one.  Malformed messages are forwarded
unmodified (a counter and an event say so): a wrong length or unknown type
is skipped by its length field; a bad magic cookie or an impossible length
loses the framing, and the direction is then forwarded unparsed.
"""

from __future__ import annotations

import struct

from ..packet.frame import U16 as U16_STRUCT, IpProto, TCP_FIN, TCP_RST, TCP_SYN, ip_str
from .base import Helper, Verdict
from .offload import Offload
from .pptp_call import CALL_STATES, CallState, Control, PptpCall
from .pptp_wire import (CALL_ID_FIELDS, CONTROL_MESSAGE, CREATES_CALL, HEADER, MAGIC_COOKIE, MAX_LENGTH,
                        MESSAGE_LENGTH, OWN, PEER, RESULT_OK, U16, PptpMessageType as T,
                        direction_record, restore_direction)
from .records import BadRecord, Record, Restore, flow_record, restore_counters
from .spec import FlowView, Timeout
from .tcpstream import Segment, write_payload_u16

PPTP_PORT = 1723
GRE_CALL_ID_AT = 6
"""Where enhanced GRE carries the receiver's Call ID (RFC 2637 §4.1)."""
CLEARING_GRACE = 10.0
"""Seconds a call lives after Call-Clear-Request while its Call-Disconnect-Notify is awaited."""


class PptpHelper(Helper):
    """The PPTP helper: control connections on TCP 1723, and GRE demultiplexed by Call ID."""

    name = "pptp"
    title = "PPTP"
    key = "p"
    flow_noun = "call"
    flow_nouns = ("call", "calls")
    flow_proto = "gre"
    view = FlowView(
        fields=("client", "server", "call_id", "translated_call_id", "peer_call_id", "call_state"),
        client="client", server="server", ids="call {call_id}>{translated_call_id}<>{peer_call_id}",
        legend="Call ID client>translated<>server", ending_events=("call_down",))
    timeouts = (Timeout("gre", 600.0, "Idle time after which a PPTP call's GRE mapping ends (Linux uses 10 "
                                      "minutes)."),)
    counters = ("pptp_calls_up", "pptp_calls_down", "pptp_malformed", "pptp_desync", "pptp_split_field")
    drop_reasons = (
        "gre_malformed",            # not enhanced GRE v1 with a key (RFC 2637 §4.1)
        "gre_no_call",              # GRE from an unknown address or for no live call
        "pptp_out_of_order",        # control segment beyond a gap; the sender retransmits it
        "pptp_rst_out_of_window",   # a RST far from the stream's next sequence number: forged (RFC 5961 §3)
        "pptp_call_ids_exhausted",
    )
    ip_protocols = (IpProto.GRE,)

    def __init__(self, config) -> None:
        super().__init__(config)
        self.inbound: dict[tuple[int, int], PptpCall] = {}
        """(remote address, translated Call ID) -> call: GRE from the WAN."""
        self.outbound: dict[tuple[int, int, int], PptpCall] = {}
        """(inside address, remote address, remote peer's Call ID) -> call: GRE from the LAN."""

    # -- the helper interface -------------------------------------------------------------

    def attaches_to(self, proto: int, inside_port: int, remote_port: int) -> bool:
        return proto == IpProto.TCP and PPTP_PORT in (inside_port, remote_port)

    def packet(self, session, frame: bytearray, ip: int, l4: int, outbound: bool, now: float) -> Verdict:
        control = session.helper_state
        if control is None:
            control = session.helper_state = Control()
        direction = control.out if outbound else control.inbound
        flags = frame[l4 + 13]
        seq = struct.unpack_from("!I", frame, l4 + 4)[0]
        payload = l4 + (frame[l4 + 12] >> 4) * 4
        length = max(0, len(frame) - payload)   # a data offset beyond the frame carries no payload
        if flags & TCP_RST and not direction.rst_plausible(seq):
            self.ctx.drop("pptp_rst_out_of_window", f"RST from {ip_str(_src(frame, ip))} with sequence number "
                          f"{seq}, not within a window of {direction.next_seq}", now)
            return Verdict.DROP
        verdict, old = direction.segment(seq, bool(flags & TCP_SYN), length)
        if verdict is Segment.GAP:
            self.ctx.drop("pptp_out_of_order", f"segment beyond a gap from {ip_str(_src(frame, ip))}", now)
            return Verdict.DROP
        if verdict is Segment.OK and not flags & TCP_SYN and length:
            if old:
                direction.replay(frame, payload, seq, old, l4)
            if length > old:
                self._parse(session, control, direction, frame, l4, payload + old, length - old, outbound, now)
        if flags & TCP_RST:
            self._end_all(control, "tcp_reset", now)
        elif flags & TCP_FIN:
            if outbound:
                control.fin_out = True
            else:
                control.fin_in = True
            if control.fin_out and control.fin_in:
                self._end_all(control, "tcp_closed", now)
        return Verdict.FORWARD

    def closed(self, session, now: float) -> None:
        if session.helper_state is not None:
            self._end_all(session.helper_state, "control_closed", now)

    def describe(self, session):
        control = session.helper_state
        return [("calls", len(control.calls) if control else 0)]

    # -- GRE (RFC 2637 §4.1) --------------------------------------------------------------------

    def flow_out(self, proto, frame, l4, size, src, dst, now):
        """GRE from an inside peer carries the remote peer's Call ID: the call is found, nothing changes."""
        if not self._gre_ok(frame, l4, size, src, now):
            return None
        call_id = frame[l4 + 6] << 8 | frame[l4 + 7]
        call = self.outbound.get((src, dst, call_id))
        if call is None:
            self.ctx.drop("gre_no_call", f"{ip_str(src)} -> {ip_str(dst)} call {call_id}", now)
        return call

    def flow_in(self, proto, frame, l4, size, src, now):
        """GRE from a remote peer: demultiplexed by the translated Call ID, the inside one restored."""
        if not self._gre_ok(frame, l4, size, src, now):
            return None
        call_id = frame[l4 + 6] << 8 | frame[l4 + 7]
        call = self.inbound.get((src, call_id))
        if call is None:
            self.ctx.drop("gre_no_call", f"from {ip_str(src)} call {call_id}", now)
            return None
        U16_STRUCT.pack_into(frame, l4 + 6, call.call_id)   # GRE v1 has no checksum to fix
        return call

    def offload_flow(self, flow, proto, outbound, frame, l4):
        """A call's GRE by the Call ID it carries: the remote peer's outbound; inbound the translated one, which
        arrives and is replaced by the inside peer's own (as ``flow_in`` does)."""
        call_id = frame[l4 + GRE_CALL_ID_AT] << 8 | frame[l4 + GRE_CALL_ID_AT + 1]
        if outbound:
            return Offload(payload_id=call_id) if call_id == flow.peer_call_id else None
        if call_id != flow.call_id:
            return None
        return Offload(payload_id=flow.translated_call_id, restore=flow.call_id, restore_at=GRE_CALL_ID_AT)

    def _gre_ok(self, frame, l4, size, src, now) -> bool:
        """Enhanced GRE: version 1, key present, no checksum or routing, protocol PPP (0x880B)."""
        if size < 8 or (frame[l4] & 0xE0) != 0x20 or (frame[l4 + 1] & 0x07) != 1 \
                or frame[l4 + 2:l4 + 4] != b"\x88\x0b":
            self.ctx.drop("gre_malformed", f"GRE from {ip_str(src)}", now)
            return False
        return True

    # -- parsing the control stream ------------------------------------------------------------

    def _parse(self, session, control, direction, frame, l4, start, length, outbound, now) -> None:
        """Feed new payload bytes ``frame[start:start+length]`` to the message parser."""
        i, end = start, start + length
        while i < end:
            if not direction.synced:
                break
            msg = direction.message
            if len(msg) < 12:
                take = min(12 - len(msg), end - i)
                msg += frame[i:i + take]
                i += take
                if len(msg) < 12:
                    break
                if not self._header_ok(msg, session, outbound, now):
                    direction.synced = False
                    break
            size = U16(msg, 0)
            take = min(size - len(msg), end - i)
            before = len(msg)
            msg += frame[i:i + take]
            ctype = U16(msg, 8)
            if ctype in CALL_ID_FIELDS and size == MESSAGE_LENGTH.get(ctype):
                for offset, role in CALL_ID_FIELDS[ctype]:
                    self._field(session, control, direction, frame, l4, i - before, before, take,
                                ctype, offset, role, outbound, now)
            i += take
            if len(msg) == size:
                self._message(session, control, bytes(msg), outbound, now)
                msg.clear()
        direction.advance(length)

    def _header_ok(self, msg, session, outbound, now) -> bool:
        size, kind, cookie, ctype = HEADER.unpack_from(msg, 0)
        where = f"{'out' if outbound else 'in'} on {_flow(session)}"
        if cookie != MAGIC_COOKIE or kind != CONTROL_MESSAGE or not 12 <= size <= MAX_LENGTH:
            self.ctx.problem("pptp_desync", f"bad header (cookie {cookie:#x}, type {kind}, length {size}) {where}"
                             "; this direction is no longer parsed", now)
            return False
        if ctype not in MESSAGE_LENGTH or size != MESSAGE_LENGTH[ctype]:
            self.ctx.problem("pptp_malformed", f"message type {ctype} with length {size} {where}; forwarded "
                             "unmodified", now)
        return True

    def _field(self, session, control, direction, frame, l4, base, before, take, ctype, offset, role,
               outbound, now) -> None:
        """Translate one Call ID field if its two bytes arrive in this segment."""
        if not before < offset + 2 <= before + take:
            return  # not in this segment's new bytes
        if offset < before:
            self.ctx.problem("pptp_split_field", f"a Call ID split across segments on {_flow(session)}", now)
            return
        at = base + offset
        value = U16(frame, at)
        new = self._translate(session, control, ctype, role, value, outbound, now)
        if new is not None and new != value:
            write_payload_u16(frame, l4, at, new)
            payload_start = l4 + (frame[l4 + 12] >> 4) * 4
            seq = struct.unpack_from("!I", frame, l4 + 4)[0]
            direction.log(seq + (at - payload_start), new.to_bytes(2, "big"))

    def _translate(self, session, control, ctype, role, value, outbound, now) -> int | None:
        if outbound and role == OWN:
            call = control.calls.get(value)
            if ctype in CREATES_CALL and (call is None or call.call_state is not CallState.REQUESTED):
                call = self._new_call(session, control, value, ctype, now)
            return call.translated_call_id if call else None
        if not outbound and role == PEER:
            call = self._by_translated(session, control, value)
            return call.call_id if call else None
        return None

    def _message(self, session, control, msg: bytes, outbound: bool, now: float) -> None:
        """A whole message (original bytes): call state changes (RFC 2637 §2)."""
        ctype = U16(msg, 8)
        if len(msg) != MESSAGE_LENGTH.get(ctype):
            return
        if ctype in (T.OCRP, T.ICRP):
            own, peer, result = U16(msg, 12), U16(msg, 14), msg[16]
            call = control.calls.get(own) if outbound else self._by_translated(session, control, peer)
            if call is None:
                return
            self._set_peer(call, peer if outbound else own)
            if result != RESULT_OK:
                self._end(call, f"refused (result {result})", now)
            elif ctype == T.OCRP:
                self._established(call, now)
        elif ctype == T.ICCN:
            peer = U16(msg, 12)
            call = self._by_peer(control, peer) if outbound else self._by_translated(session, control, peer)
            if call is not None:
                self._established(call, now)
        elif ctype == T.CCRQ:
            own = U16(msg, 12)
            call = control.calls.get(own) if outbound else self._by_peer(control, own)
            if call is not None:
                call.call_state = CallState.CLEARING
                call.deadline = now + CLEARING_GRACE
        elif ctype == T.CDN:
            own = U16(msg, 12)
            call = control.calls.get(own) if outbound else self._by_peer(control, own)
            if call is not None:
                self._end(call, "call disconnect notify", now)
        elif ctype in (T.STOP_CCRQ, T.STOP_CCRP):
            self._end_all(control, "stop control connection", now)

    # -- calls ---------------------------------------------------------------------------------

    def _new_call(self, session, control, call_id, ctype, now) -> PptpCall | None:
        old = control.calls.get(call_id)
        if old is not None:
            self._end(old, "call ID reused", now)
        if not self.ctx.room(session.inside_ip, now):
            return None
        translated = self._allocate(session.remote_ip, call_id)
        if translated is None:
            self.ctx.drop("pptp_call_ids_exhausted", f"no free Call ID towards {ip_str(session.remote_ip)}", now)
            return None
        inside_is_client = ctype in (T.OCRQ, T.ICRP)
        call = PptpCall(self.ctx.new_id(), control, session.inside_ip, session.remote_ip, call_id, translated,
                        inside_is_client, self.ctx.wan_ip, now)
        control.calls[call_id] = call
        self.inbound[(call.remote_ip, translated)] = call
        self.opened(call, now)
        return call

    def _allocate(self, remote_ip: int, wanted: int) -> int | None:
        """A Call ID unique towards ``remote_ip``: the inside peer's own if free, else a random one."""
        if (remote_ip, wanted) not in self.inbound:
            return wanted
        rng = self.ctx.rng
        for _ in range(64):
            candidate = rng.randint(1, 65535)
            if (remote_ip, candidate) not in self.inbound:
                return candidate
        return next((c for c in range(1, 65536) if (remote_ip, c) not in self.inbound), None)

    def _by_translated(self, session, control, translated: int) -> PptpCall | None:
        """The call of this control connection that the remote peer knows by ``translated``."""
        call = self.inbound.get((session.remote_ip, translated))
        return call if call is not None and call.control is control else None

    @staticmethod
    def _by_peer(control, peer_call_id: int) -> PptpCall | None:
        return next((c for c in control.calls.values() if c.peer_call_id == peer_call_id), None)

    def _set_peer(self, call: PptpCall, peer_call_id: int) -> None:
        self.ctx.withdraw(call)
        if call.peer_call_id is not None:
            self.outbound.pop((call.inside_ip, call.remote_ip, call.peer_call_id), None)
        call.peer_call_id = peer_call_id
        self.outbound[(call.inside_ip, call.remote_ip, peer_call_id)] = call

    def _established(self, call: PptpCall, now: float) -> None:
        if call.call_state is CallState.REQUESTED:
            call.call_state = CallState.ESTABLISHED
            call.last_seen = now
            self.ctx.event("call_up", {"id": call.id, **call.details()}, now, counter="pptp_calls_up")

    def _end(self, call: PptpCall, reason: str, now: float) -> None:
        if call.closed:
            return
        control = call.control
        if control.calls.get(call.call_id) is call:
            del control.calls[call.call_id]
        if self.inbound.get((call.remote_ip, call.translated_call_id)) is call:
            del self.inbound[(call.remote_ip, call.translated_call_id)]
        if call.peer_call_id is not None and \
                self.outbound.get((call.inside_ip, call.remote_ip, call.peer_call_id)) is call:
            del self.outbound[(call.inside_ip, call.remote_ip, call.peer_call_id)]
        call.closed = True
        self.ended(call, reason, now)
        self.ctx.event("call_down", {"id": call.id, **call.details(), "reason": reason}, now,
                       counter="pptp_calls_down")

    def _end_all(self, control, reason: str, now: float) -> None:
        for call in list(control.calls.values()):
            self._end(call, reason, now)

    # -- time and views ---------------------------------------------------------------------------

    def expire(self, now: float) -> None:
        """End calls whose GRE has been idle too long, or whose clearing grace is over."""
        idle = self.ctx.timeouts.gre
        for call in [c for c in self.inbound.values()
                     if (c.deadline and c.deadline <= now) or c.last_seen + idle <= now]:
            self._end(call, "idle" if not call.deadline else "cleared", now)

    def next_deadline(self) -> float | None:
        if not self.inbound:
            return None
        idle = self.ctx.timeouts.gre
        return min(c.deadline if c.deadline else c.last_seen + idle for c in self.inbound.values())

    def end_flow(self, flow: PptpCall, reason: str, now: float) -> None:
        self._end(flow, reason, now)

    def tables(self) -> dict:
        return {**super().tables(), "inbound": self.inbound, "outbound": self.outbound}

    # -- the state file: calls go with their control connection's NAT session -------------------------

    def session_record(self, session) -> dict | None:
        control = session.helper_state
        if control is None:
            return None
        return {"out": direction_record(control.out), "in": direction_record(control.inbound),
                "fin_out": control.fin_out, "fin_in": control.fin_in,
                "calls": [{**flow_record(call), "call_id": call.call_id, "translated_call_id": call.translated_call_id,
                           "peer_call_id": call.peer_call_id, "inside_is_client": call.inside_is_client,
                           "call_state": call.call_state.value, "deadline": call.deadline}
                          for call in control.calls.values()]}

    def restore_session(self, session, record: Record | None, restore: Restore) -> None:
        if record is None:
            return
        control = Control()
        for direction, key in ((control.out, "out"), (control.inbound, "in")):
            restore_direction(direction, record.record(key) or Record({}))
        control.fin_out, control.fin_in = record.flag("fin_out"), record.flag("fin_in")
        session.helper_state = control
        restore.each(self.flow_kind, record.items("calls"), lambda r: self._restore_call(session, control, r, restore))

    def _restore_call(self, session, control: Control, r: Record, restore: Restore) -> PptpCall:
        call_id, translated = r.port("call_id"), r.port("translated_call_id")
        peer = r.optional_integer("peer_call_id", 0, 65535)
        inside, remote = session.inside_ip, session.remote_ip
        if call_id in control.calls:
            raise BadRecord(f"Call ID {call_id} twice on one control connection")
        if (remote, translated) in self.inbound:
            raise BadRecord(f"translated Call ID {translated} towards {ip_str(remote)} taken twice")
        if peer is not None and (inside, remote, peer) in self.outbound:
            raise BadRecord(f"peer Call ID {peer} taken twice")
        created, last_seen = restore.times(r)
        state = CallState(r.text("call_state", "established", choices=CALL_STATES))
        inside_is_client, deadline = r.flag("inside_is_client", True), r.time("deadline", 0.0)
        restore.take_flow(inside)
        call = PptpCall(restore.claim(r), control, inside, remote, call_id, translated, inside_is_client,
                        self.ctx.wan_ip, created)
        call.last_seen, call.call_state, call.deadline = last_seen, state, deadline
        restore_counters(call, r)
        control.calls[call_id] = self.inbound[(remote, translated)] = call
        self.adopt(call)
        if peer is not None:
            self._set_peer(call, peer)
        return call



def _src(frame, ip: int) -> int:
    return int.from_bytes(frame[ip + 12:ip + 16], "big")


def _flow(session) -> str:
    return f"{ip_str(session.inside_ip)}:{session.inside_port} <-> {ip_str(session.remote_ip)}:{session.remote_port}"
