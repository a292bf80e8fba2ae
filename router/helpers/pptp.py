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
from enum import Enum, IntEnum

from ..packet.frame import U16 as U16_STRUCT, IpProto, TCP_FIN, TCP_RST, TCP_SYN, ip_str
from .base import Flow, Helper, Verdict
from .records import BadRecord, Record, Restore, flow_record, restore_counters
from .tcpstream import Segment, StreamDirection, write_payload_u16

PPTP_PORT = 1723
MAGIC_COOKIE = 0x1A2B3C4D
CONTROL_MESSAGE = 1
HEADER = struct.Struct("!HHIH")
"""length, PPTP message type, magic cookie, control message type (RFC 2637 §2)."""
MAX_LENGTH = 4096
CLEARING_GRACE = 10.0
"""Seconds a call lives after Call-Clear-Request while its Call-Disconnect-Notify is awaited."""


class PptpMessageType(IntEnum):
    """Control message types (RFC 2637 §2.1-§2.15)."""
    SCCRQ = 1
    SCCRP = 2
    STOP_CCRQ = 3
    STOP_CCRP = 4
    ECHO_RQ = 5
    ECHO_RP = 6
    OCRQ = 7
    OCRP = 8
    ICRQ = 9
    ICRP = 10
    ICCN = 11
    CCRQ = 12
    CDN = 13
    WEN = 14
    SLI = 15


T = PptpMessageType
MESSAGE_LENGTH = {T.SCCRQ: 156, T.SCCRP: 156, T.STOP_CCRQ: 16, T.STOP_CCRP: 16, T.ECHO_RQ: 16, T.ECHO_RP: 20,
                  T.OCRQ: 168, T.OCRP: 32, T.ICRQ: 220, T.ICRP: 24, T.ICCN: 28, T.CCRQ: 16, T.CDN: 148,
                  T.WEN: 40, T.SLI: 24}
"""Length of each message, header included (RFC 2637 §2; the sizes Linux's helper checks)."""

OWN, PEER = "own", "peer"
CALL_ID_FIELDS = {T.OCRQ: ((12, OWN),), T.OCRP: ((12, OWN), (14, PEER)), T.ICRQ: ((12, OWN),),
                  T.ICRP: ((12, OWN), (14, PEER)), T.ICCN: ((12, PEER),), T.CCRQ: ((12, OWN),),
                  T.CDN: ((12, OWN),), T.WEN: ((12, PEER),), T.SLI: ((12, PEER),)}
"""Where each message carries a Call ID, and whose: the sender's own or its peer's."""
CREATES_CALL = frozenset({T.OCRQ, T.OCRP, T.ICRQ, T.ICRP})
RESULT_OK = 1   # OCRP "Connected", ICRP "Connect" (RFC 2637 §2.8, §2.10)


class CallState(Enum):
    REQUESTED = "requested"
    ESTABLISHED = "established"
    CLEARING = "clearing"


class PptpCall(Flow):
    """One call: the inside peer's Call ID, its translation, the remote peer's Call ID; its GRE is the flow."""

    __slots__ = ("control", "call_id", "translated_call_id", "peer_call_id", "inside_is_client", "call_state",
                 "deadline")
    proto = "gre"
    vpn = "pptp"

    def __init__(self, cid: int, control, inside_ip: int, remote_ip: int, call_id: int, translated: int,
                 inside_is_client: bool, wan_ip: int, now: float):
        super().__init__(cid, inside_ip, remote_ip, wan_ip, now)
        self.control = control
        self.call_id = call_id
        self.translated_call_id = translated
        self.peer_call_id: int | None = None
        self.inside_is_client = inside_is_client
        self.call_state = CallState.REQUESTED
        self.deadline = 0.0

    # Call IDs stand where ports would.
    def inside(self) -> str:
        return f"{ip_str(self.inside_ip)}:{self.call_id}"

    def outside(self, wan_ip: int) -> str:
        return f"{ip_str(wan_ip)}:{self.translated_call_id}"

    def remote(self) -> str:
        return f"{ip_str(self.remote_ip)}:{'' if self.peer_call_id is None else self.peer_call_id}"

    def state(self) -> str:
        return self.call_state.value

    def details(self) -> dict:
        client, server = (self.inside_ip, self.remote_ip) if self.inside_is_client else (self.remote_ip, self.inside_ip)
        return {"client": ip_str(client), "server": ip_str(server), "call_id": self.call_id,
                "translated_call_id": self.translated_call_id, "peer_call_id": self.peer_call_id,
                "call_state": self.call_state.value}


class Direction(StreamDirection):
    """A control stream direction plus the message being assembled."""
    __slots__ = ("message", "synced")

    def __init__(self) -> None:
        super().__init__()
        self.message = bytearray()
        """The original bytes of the current message so far."""
        self.synced = True


class Control:
    """The state of one control connection (``session.helper_state``)."""
    __slots__ = ("out", "inbound", "calls", "fin_out", "fin_in")

    def __init__(self) -> None:
        self.out, self.inbound = Direction(), Direction()
        self.calls: dict[int, PptpCall] = {}
        """Inside peer's Call ID -> call."""
        self.fin_out = self.fin_in = False


class PptpHelper(Helper):
    """The PPTP helper: control connections on TCP 1723, and GRE demultiplexed by Call ID."""

    name = "pptp"
    flow_noun = "call"
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
        self.ctx.flow_opened(call, now)
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
        self.ctx.flow_closed(call, reason, now)
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

    def flows(self) -> list[PptpCall]:
        return list(self.inbound.values())

    def close_flow(self, flow_id: int, now: float, reason: str = "closed_by_request") -> bool:
        call = next((c for c in self.inbound.values() if c.id == flow_id), None)
        if call is not None:
            self._end(call, reason, now)
        return call is not None


    # -- the state file: calls go with their control connection's NAT session -------------------------

    def session_record(self, session) -> dict | None:
        control = session.helper_state
        if control is None:
            return None
        return {"out": _direction_record(control.out), "in": _direction_record(control.inbound),
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
            _restore_direction(direction, record.record(key) or Record({}))
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
        if peer is not None:
            self._set_peer(call, peer)
        return call


CALL_STATES = tuple(state.value for state in CallState)


def _direction_record(direction: Direction) -> dict:
    return {"next_seq": direction.next_seq, "rewrites": [[seq, data] for seq, data in direction.rewrites],
            "message": bytes(direction.message), "synced": direction.synced}


def _restore_direction(direction: Direction, r: Record) -> None:
    """A control stream direction as ``_direction_record`` wrote it: where it is, and the rewrites to replay."""
    direction.next_seq = r.optional_integer("next_seq", 0, 0xFFFFFFFF)
    for entry in r.items("rewrites", most=direction.rewrites.maxlen):
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], int)
                and 0 <= entry[0] <= 0xFFFFFFFF and isinstance(entry[1], bytes) and 0 < len(entry[1]) <= 2):
            raise BadRecord("a control stream rewrite is not [sequence number, 1 or 2 bytes]")
        direction.rewrites.append((entry[0], entry[1]))
    direction.message = bytearray(r.octets("message", most=MAX_LENGTH, default=b""))
    direction.synced = r.flag("synced", True)


def U16(data, at: int) -> int:  # noqa: N802 - reads like the struct format it stands for
    return data[at] << 8 | data[at + 1]


def _src(frame, ip: int) -> int:
    return int.from_bytes(frame[ip + 12:ip + 16], "big")


def _flow(session) -> str:
    return f"{ip_str(session.inside_ip)}:{session.inside_port} <-> {ip_str(session.remote_ip)}:{session.remote_port}"
