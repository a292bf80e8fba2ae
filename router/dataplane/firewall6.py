"""The IPv6 stateful firewall of a home gateway (RFC 6092): what goes out, and its replies, pass; nothing else
comes in, unless a VPN's IPv6 switch lets in what it declares (``Helper.ipv6_inbound``; RFC 6092 §3.2.4).

A flow is a state record keyed by its outbound five-tuple (protocol, LAN address, LAN port, remote address,
remote port); ports are the transport's, the Identifier for ICMPv6 echo, and 0 for other protocols (ESP, GRE:
the pair of addresses stands for the flow).  Outbound packets make and refresh records; inbound ones pass
when they match one (RFC 6092 §3.2 for the connection-free protocols, §3.3 for TCP, whose records live
longer once an answer has come: RFC 5382 REQ-5's 2 h 4 min).  ICMPv6 errors pass in when the packet they
quote matches a record.  Records end after their idle timeout (``expire``), the NAT's ``[timeouts]``.

Pure: packets in as numbers, verdicts out.  ``router.dataplane.native6`` feeds it.
"""

from __future__ import annotations

from ..packet.ipv6 import address_text
from .events import SessionInfo

TCP, UDP, ICMPV6 = 6, 17, 58
PROTO_NAMES = {TCP: "tcp", UDP: "udp", ICMPV6: "icmp", 47: "gre", 50: "esp", 51: "ah"}
SWEEP_EVERY = 5.0
"""Seconds between two sweeps of the expired records (``expire``)."""


class Flow6:
    """One state record, shown by the control socket like a NAT session (``family``: "ipv6")."""
    __slots__ = ("id", "key", "created", "last_seen", "answered", "closing", "packets_in", "packets_out",
                 "bytes_in", "bytes_out", "admitted", "tap")

    def __init__(self, ident: int, key: tuple, now: float, admitted: bool = False):
        self.id, self.key, self.created, self.last_seen = ident, key, now, now
        self.answered = self.closing = False
        self.packets_in = self.packets_out = self.bytes_in = self.bytes_out = 0
        self.admitted = admitted
        """Made by an inbound packet a VPN's IPv6 switch let in, not by the LAN host."""
        self.tap = None

    def view_state(self) -> str:
        if self.admitted:
            return "admitted"
        if self.closing:
            return "closing"
        return "established" if self.answered else "open"

    def totals(self) -> tuple[int, int, int, int]:
        return self.packets_in, self.packets_out, self.bytes_in, self.bytes_out

    def info(self, now: float, wan_ip: int | None = None) -> SessionInfo:
        proto, inside, inside_port, remote, remote_port = self.key
        name = PROTO_NAMES.get(proto, str(proto))
        here = f"[{address_text(inside)}]:{inside_port}"
        return SessionInfo(self.id, name, here, here, f"[{address_text(remote)}]:{remote_port}", self.view_state(),
                           round(max(0.0, now - self.last_seen), 3), round(max(0.0, now - self.created), 3),
                           *self.totals(), details=(("family", "ipv6"),))


class Firewall6:
    """The records, and the verdicts."""

    def __init__(self, timeouts, ids, max_flows: int = 65536, admits: dict | None = None,
                 switches: dict | None = None):
        self.timeouts, self.ids, self.max_flows = timeouts, ids, max_flows
        self.admits: dict[str, frozenset] = admits or {}
        """Switch name -> the (protocol, port) it lets in unasked (port 0: a protocol without ports)."""
        self.switches: dict[str, bool] = dict.fromkeys(self.admits, False) | (switches or {})
        self.open_doors: frozenset = frozenset()
        self.set_switches()
        self.flows: dict[tuple, Flow6] = {}
        self.pairs: dict[tuple[bytes, bytes], int] = {}
        """(LAN address, remote address) -> its records: what lets a non-first fragment in, which has no ports."""
        self.next_sweep = 0.0
        self.opened: list[Flow6] = []
        self.closed: list[tuple[Flow6, str]] = []
        """What the router reports as session events, and empties."""

    def __len__(self) -> int:
        return len(self.flows)

    def outbound(self, proto: int, inside: bytes, inside_port: int, remote: bytes, remote_port: int, tcp_flags: int,
                 size: int, now: float) -> Flow6 | None:
        """A packet from the LAN: its record, made if needed; None if the table is full (the caller drops the
        packet and tells its sender)."""
        key = (proto, inside, inside_port, remote, remote_port)
        flow = self.flows.get(key)
        if flow is None:
            if len(self.flows) >= self.max_flows:
                return None
            flow = self.flows[key] = Flow6(next(self.ids), key, now)
            self._paired(key, 1)
            self.opened.append(flow)
        flow.last_seen = now
        flow.packets_out += 1
        flow.bytes_out += size
        if proto == TCP and tcp_flags & 0x05:       # FIN or RST: the connection is ending (RFC 6092 §3.3.2)
            flow.closing = True
        return flow

    def inbound(self, proto: int, inside: bytes, inside_port: int, remote: bytes, remote_port: int, tcp_flags: int,
                size: int, now: float) -> Flow6 | None:
        """A packet from the WAN to a LAN host: the record it answers, or one a switch makes for it; None: it
        is unsolicited, and dropped."""
        key = (proto, inside, inside_port, remote, remote_port)
        flow = self.flows.get(key)
        if flow is None:
            if _door(proto, inside_port) not in self.open_doors or len(self.flows) >= self.max_flows:
                return None
            flow = self.flows[key] = Flow6(next(self.ids), key, now, admitted=True)
            self._paired(key, 1)
            self.opened.append(flow)
        flow.last_seen = now
        flow.answered = True
        flow.packets_in += 1
        flow.bytes_in += size
        if proto == TCP and tcp_flags & 0x05:
            flow.closing = True
        return flow

    def set_switches(self, **changes: bool) -> None:
        self.switches.update(changes)
        self.open_doors = frozenset().union(*(self.admits[name] for name, on in self.switches.items() if on))

    def shut(self) -> None:
        """End the records a switch let in whose switch is off now."""
        for flow in [f for f in self.flows.values() if f.admitted and _door(f.key[0], f.key[2]) not in self.open_doors]:
            self.close(flow.id)

    def _paired(self, key: tuple, change: int) -> None:
        pair = (key[1], key[3])
        count = self.pairs.get(pair, 0) + change
        if count:
            self.pairs[pair] = count
        else:
            self.pairs.pop(pair, None)

    def paired(self, inside: bytes, remote: bytes) -> bool:
        """Whether the LAN host has a record with this remote address: a later fragment of a packet between
        them may pass (its first fragment, which has the ports, was checked)."""
        return (inside, remote) in self.pairs

    def quoted(self, proto: int, inside: bytes, inside_port: int, remote: bytes, remote_port: int) -> bool:
        """Whether an ICMPv6 error quoting this outbound packet belongs to a record."""
        return (proto, inside, inside_port, remote, remote_port) in self.flows

    def timeout(self, flow: Flow6) -> float:
        t = self.timeouts
        proto = flow.key[0]
        if proto == TCP:
            return t.tcp_established if flow.answered and not flow.closing else t.tcp_transitory
        if proto == ICMPV6:
            return t.icmp
        return t.udp

    def expire(self, now: float) -> None:
        """End the records idle past their timeout (a sweep every ``SWEEP_EVERY`` seconds at most)."""
        if now < self.next_sweep:
            return
        self.next_sweep = now + SWEEP_EVERY
        for key, flow in list(self.flows.items()):
            if now - flow.last_seen > self.timeout(flow):
                del self.flows[key]
                self._paired(key, -1)
                self.closed.append((flow, "timeout"))

    def close(self, ident: int) -> bool:
        for key, flow in self.flows.items():
            if flow.id == ident:
                del self.flows[key]
                self._paired(key, -1)
                self.closed.append((flow, "closed"))
                return True
        return False

    def next_deadline(self) -> float | None:
        return self.next_sweep if self.flows else None


def _door(proto: int, inside_port: int) -> tuple[int, int]:
    """What a switch names an inbound packet by: its protocol, and its destination port where it has ports."""
    return proto, inside_port if proto in (TCP, UDP) else 0
