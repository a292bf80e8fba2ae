"""What the data plane tells the world: events, drop reasons and counters.

Events are frozen, slotted dataclasses made on the cold path only (a session
opens or closes, a switch flips, a packet is dropped).  Drop events are rate
limited per reason so that a flood of bad frames costs a counter increment,
not an object per frame; the counters themselves are never limited.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum


class DropReason(str, Enum):
    """Why a frame was not forwarded.  Each has its own counter ``drop_<value>``."""
    TRUNCATED = "truncated"                      # shorter than its headers say
    BAD_IP_HEADER = "bad_ip_header"              # version, IHL or total length wrong
    BAD_IP_CHECKSUM = "bad_ip_checksum"
    BAD_ICMP_CHECKSUM = "bad_icmp_checksum"      # RFC 5508: ICMP errors with bad checksums are dropped
    TTL_EXCEEDED = "ttl_exceeded"
    FRAG_NEEDED = "frag_needed"                  # DF set and larger than the egress MTU
    NON_IPV4 = "non_ipv4"                        # IPv6 and other ethertypes
    BAD_ARP = "bad_arp"
    SPOOFED_SOURCE = "spoofed_source"            # LAN frame whose source is outside the LAN subnet
    MARTIAN = "martian"                          # broadcast, multicast, loopback or zero addresses
    UNSOLICITED = "unsolicited"                  # inbound with no mapping or filtered (RFC 4787 REQ-8)
    NOT_ROUTABLE = "not_routable"                # WAN frame for an address that is not ours
    TCP_NO_SESSION = "tcp_no_session"            # a new TCP flow that does not start with SYN (RFC 6146 §3.5.2.2)
    SESSION_LIMIT = "session_limit"              # table full; answered with ICMP 3/13
    PORTS_EXHAUSTED = "ports_exhausted"
    ICMP_ERROR_NO_SESSION = "icmp_error_no_session"
    ICMP_UNSUPPORTED = "icmp_unsupported"
    UNSUPPORTED_PROTOCOL = "unsupported_protocol"
    FRAGMENT_ORPHANED = "fragment_orphaned"      # non-first fragments whose first fragment never came
    BAD_FRAGMENT = "bad_fragment"
    ARP_QUEUE_FULL = "arp_queue_full"
    ARP_UNRESOLVED = "arp_unresolved"
    HELPER = "helper"                            # a protocol helper refused the packet
    PASSTHROUGH_OFF = "passthrough_off"          # the protocol's passthrough switch is off
    SHARED_PORT_UNMATCHED = "shared_port_unmatched"  # to a shared outside port; no helper could pick a host
    HAIRPIN_OFF = "hairpin_off"                  # to the WAN address from the LAN, with hairpinning off
    PORTLESS_UNDER_PORT_SET = "portless_under_port_set"  # GRE or raw ESP: no port to share an address by
    REFUSED_SINGLE = "refused_single"            # single passthrough: another client holds the protocol
    DENIED_BY_RULE = "denied_by_rule"            # a [[passthrough.rule]] (or the default action) denied it
    # Helpers add reasons of their own (``Helper.drop_reasons``), as plain strings.


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A snapshot of one NAT session, as ``ctl sessions --json`` shows it."""
    id: int
    proto: str
    inside: str
    outside: str
    remote: str
    state: str
    idle: float
    age: float
    packets_in: int
    packets_out: int
    bytes_in: int
    bytes_out: int
    vpn: str | None = None
    details: tuple[tuple[str, object], ...] = ()
    recognised: str | None = None
    """A protocol that needs no helper, by name (``router.recognise``); None for the others."""
    recognised_by: str | None = None
    """How it was recognised: "port" or "first bytes" (``router.control.schema.RECOGNISED_BY``)."""

    def to_dict(self) -> dict:
        data = {"id": self.id, "proto": self.proto, "inside": self.inside, "outside": self.outside,
                "remote": self.remote, "state": self.state, "idle": self.idle, "age": self.age,
                "packets_in": self.packets_in, "packets_out": self.packets_out, "bytes_in": self.bytes_in,
                "bytes_out": self.bytes_out,     # by hand: dataclasses.asdict deep-copies, ten times slower
                "recognised": self.recognised, "recognised_by": self.recognised_by}
        if self.vpn is not None:
            data["vpn"] = self.vpn
        data.update(self.details)
        return data


class LazyInfo:
    """A NAT session's ``SessionInfo``, made when someone first looks: most events are read by no subscriber, and
    making one took a sixth of the cost of opening a session."""
    __slots__ = ("_session", "_now", "_wan_ip", "_info")

    def __init__(self, session, now: float, wan_ip: int):
        self._session, self._now, self._wan_ip, self._info = session, now, wan_ip, None

    def get(self) -> SessionInfo:
        if self._info is None:
            self._info = self._session.info(self._now, self._wan_ip)
        return self._info

    def __getattr__(self, name: str):
        return getattr(self.get(), name)


@dataclass(frozen=True, slots=True)
class SessionOpened:
    time: float
    session: SessionInfo | LazyInfo


@dataclass(frozen=True, slots=True)
class SessionClosed:
    time: float
    session: SessionInfo | LazyInfo
    reason: str


@dataclass(frozen=True, slots=True)
class SwitchChanged:
    time: float
    name: str
    on: bool
    mode: str = "multi"
    """"off", "single" or "multi"."""


@dataclass(frozen=True, slots=True)
class ProfileChanged:
    time: float
    name: str
    nat: tuple[tuple[str, object], ...]
    """The NAT behaviour now applied to new sessions, as ``status()["nat"]``."""


@dataclass(frozen=True, slots=True)
class PacketDropped:
    time: float
    reason: str
    """A ``DropReason`` value or a helper's own reason."""
    port: str
    summary: str
    suppressed: int = 0
    """How many drops of this reason were not reported since the last event of it."""


@dataclass(frozen=True, slots=True)
class VpnEvent:
    """Something a passthrough helper reports: a call up or down, a malformed message."""
    time: float
    vpn: str
    kind: str
    details: tuple[tuple[str, object], ...] = ()


Event = SessionOpened | SessionClosed | SwitchChanged | PacketDropped | VpnEvent | ProfileChanged


def event_to_dict(event: Event) -> dict:
    """The wire form of an event for the control socket."""
    kind = {SessionOpened: "session_opened", SessionClosed: "session_closed",
            SwitchChanged: "switch_changed", PacketDropped: "packet_dropped", VpnEvent: "vpn",
            ProfileChanged: "profile_changed"}[type(event)]
    data = {"type": kind, "time": event.time}
    if isinstance(event, (SessionOpened, SessionClosed)):
        data["session"] = event.session.to_dict()
        if isinstance(event, SessionClosed):
            data["reason"] = event.reason
    elif isinstance(event, SwitchChanged):
        data.update(name=event.name, on=event.on, mode=event.mode)
    elif isinstance(event, ProfileChanged):
        data.update(name=event.name, nat=dict(event.nat))
    elif isinstance(event, VpnEvent):
        data.update(dict(event.details))
        data.update(vpn=event.vpn, event=event.kind)
    else:
        data.update(reason=event.reason, port=event.port, summary=event.summary,
                    suppressed=event.suppressed)
    return data


class EventQueue:
    """A bounded queue of events with per-reason rate limiting of drop events."""

    def __init__(self, maxlen: int = 4096, drops_per_second: int = 20) -> None:
        self._queue: deque[Event] = deque()
        self._maxlen = maxlen
        self._drops_per_second = drops_per_second
        self._drop_window: dict[str, list] = {}
        self.lost = 0
        """Events discarded because nobody took them in time."""

    def push(self, event: Event) -> None:
        if len(self._queue) >= self._maxlen:
            self._queue.popleft()
            self.lost += 1
        self._queue.append(event)

    def drop(self, now: float, reason: str, port: str, summary) -> None:
        """A drop's event, rate limited; ``summary`` is a string, or a callable that makes it only when the event
        goes out (a flood's drops are mostly counted, not described)."""
        suppressed = self.allow(reason, now)
        if suppressed is not None:
            self.push(PacketDropped(now, reason, port, summary if isinstance(summary, str) else summary(),
                                    suppressed))

    def allow(self, key, now: float) -> int | None:
        """Rate limit events of one kind: None to suppress this one, else how many were suppressed before it."""
        window = self._drop_window.get(key)
        second = int(now)
        if window is None or window[0] != second:
            suppressed = window[2] if window else 0
            self._drop_window[key] = [second, 1, 0]
            return suppressed
        if window[1] < self._drops_per_second:
            window[1] += 1
            suppressed, window[2] = window[2], 0
            return suppressed
        window[2] += 1
        return None

    def pop(self) -> Event | None:
        return self._queue.popleft() if self._queue else None

    def __len__(self) -> int:
        return len(self._queue)


class Counters(dict):
    """Named counters; every drop reason, the router's and its helpers', is present from the start, at zero."""

    FORWARDING = ("frames_in_lan", "frames_in_wan", "frames_out_lan", "frames_out_wan",
                  "bytes_in_lan", "bytes_in_wan", "bytes_out_lan", "bytes_out_wan", "write_errors_lan",
                  "write_errors_wan", "arp_requests_sent", "arp_replies_sent",
                  "icmp_errors_sent", "icmp_errors_rate_limited", "echo_replies_sent",
                  "fragments_made", "sessions_created", "sessions_closed", "ignored_other_mac",
                  "events_lost")

    def __init__(self, extra: tuple[str, ...] = (), drop_reasons: tuple[str, ...] = ()) -> None:
        super().__init__({name: 0 for name in self.FORWARDING + tuple(extra)})
        for reason in [r.value for r in DropReason] + list(drop_reasons):
            self["drop_" + reason] = 0
