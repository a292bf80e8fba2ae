"""The NAPT table: mappings, sessions, port allocation and expiry.

Theory of operation
-------------------
A *mapping* binds an inside (address, port) to an outside port on the WAN
address, per protocol.  By default whatever the destination: endpoint-
independent mapping (RFC 4787 REQ-1, RFC 5382 REQ-1); ``[nat] mapping`` may
make it per destination address or per destination address and port
(RFC 4787 §4.1), which only changes the mapping's key.  Each mapping keeps the
filtering it was made with (RFC 4787 §5), so a behaviour changed at run time
(``ctl profile``) applies to new mappings only.  Outside ports come from the
configured port set if there is one (RFC 7597 §5.1), by the configured
assignment: the inside port if free, the next free one, or a random one
(RFC 6056 §3.3.1).  A *session* is one flow through a mapping,
one remote endpoint; it carries the state, the counters and the checksum
deltas that make forwarding one in-place rewrite.  Sessions are found by the
exact addresses of a packet as it arrives: ``out_sessions`` by what the LAN
sends, ``in_sessions`` by what the WAN sends.  A mapping lives while it has
sessions, or for ever when a port forward made it.

For ICMP queries the identifier plays the part of the port (RFC 5508 §3.1):
outbound keys use (id, 0) as ports, inbound keys (0, id).

A *shared* mapping keeps its inside port on the outside although other
inside hosts hold the same outside port (a helper's well-known port, which
some servers insist on).  Its sessions' inbound keys can collide, so
they are kept in lists in ``shared_in`` instead of ``in_sessions``, and a
helper picks among them by payload.  A shared outside port is never given
to an ordinary mapping.

Expiry is lazy: a heap holds one deadline guess per session; when a guess
comes due the real deadline (last packet + the state's timeout) is checked
and the entry pushed back if the session was used since.  The per-packet cost
of keeping a session alive is therefore one attribute store.
"""

from __future__ import annotations

import heapq
import random
from itertools import count

from ..behaviour import NatBehaviour
from ..config import Forward, Limits, Timeouts
from ..packet.frame import IpProto
from .events import DropReason
from .natsession import (ADDRESS_AND_PORT_DEPENDENT, ADDRESS_DEPENDENT, ENDPOINT_INDEPENDENT, Ids, Mapping,
                         Session)
from .tcpstate import ESTABLISHED_LIFETIME, TcpState

DEPENDENCE = {"endpoint-independent": ENDPOINT_INDEPENDENT, "address-dependent": ADDRESS_DEPENDENT,
              "address-and-port-dependent": ADDRESS_AND_PORT_DEPENDENT}
class NatTable:
    """Mappings and sessions of one WAN address."""

    def __init__(self, wan_ip: int, timeouts: Timeouts, limits: Limits, behaviour: NatBehaviour,
                 forwards: tuple[Forward, ...] = (), rng: random.Random | None = None, ids=None):
        self.wan_ip = wan_ip
        self.timeouts = timeouts
        self.limits = limits
        self.rng = rng or random.Random()
        self._next_port: dict[int, int] = {}
        """Per protocol: where a sequential assignment looks next (an index into the pool)."""
        self.set_behaviour(behaviour)
        self.out_sessions: dict[tuple, Session] = {}
        self.in_sessions: dict[tuple, Session] = {}
        self.mappings: dict[tuple, Mapping] = {}
        self.by_outside: dict[tuple, Mapping] = {}
        self.shared_ports: dict[tuple, int] = {}
        """(proto, outside port) -> shared mappings holding it."""
        self.shared_in: dict[tuple, list[Session]] = {}
        """Inbound key -> the sessions of shared mappings that answer to it."""
        self.per_host: dict[int, int] = {}
        self.closed: list[tuple[Session, str]] = []
        """Sessions closed since the owner last looked: (session, reason)."""
        self._heap: list[tuple[float, int, Session]] = []
        self.ids = ids if ids is not None else Ids()
        self._seq = count()
        self.closing = None
        """Called with each session as it closes, before anything else (the fast path withdraws its entries)."""
        self.gone_hosts: set[int] = set()
        """LAN hosts whose restored mappings give way to new flows (``_make_room``): the router fills it."""
        for fwd in forwards:
            proto = IpProto.TCP if fwd.proto == "tcp" else IpProto.UDP
            self.add_mapping(Mapping(proto, fwd.inside_ip, fwd.inside_port, fwd.port, static=True))

    def __len__(self) -> int:
        return len(self.out_sessions)

    def set_behaviour(self, behaviour: NatBehaviour) -> None:
        """Mapping, filtering, port assignment and port set for the mappings made from now on."""
        self.behaviour = behaviour
        self.mapping_dependence = DEPENDENCE[behaviour.mapping]
        self.filtering = DEPENDENCE[behaviour.filtering]
        self.port_set = behaviour.port_set
        self._set_ports = behaviour.port_set.ports() if behaviour.port_set else ()
        self._next_port.clear()

    def port_allowed(self, port: int) -> bool:
        """Whether ``port`` may be an outside port (always, unless a port set rules it out)."""
        return self.port_set is None or port in self.port_set

    def _mapping_key(self, proto: int, src: int, sport: int, dst: int, dport: int) -> tuple:
        dependence = self.mapping_dependence
        if dependence == ENDPOINT_INDEPENDENT:
            return (proto, src, sport)
        if dependence == ADDRESS_DEPENDENT or proto == IpProto.ICMP:
            return (proto, src, sport, dst)
        return (proto, src, sport, dst, dport)

    # -- creating sessions (cold path) -------------------------------------------------

    def open_outbound(self, proto: int, src: int, sport: int, dst: int, dport: int,
                      now: float, share: bool = False) -> Session | DropReason:
        """A new flow from the LAN: find or make its mapping, then a session (RFC 4787 REQ-1).

        With ``share`` a new mapping keeps ``sport`` outside even where other
        hosts' shared mappings hold it, unless an ordinary mapping does or a
        port set excludes it (then it is translated like any other).  Shared
        mappings are endpoint-independent: the helper tells their flows apart.
        """
        limit = self._check_limits(src)
        if limit is not None:
            return limit
        share = share and self.port_allowed(sport)
        key = (proto, src, sport) if share else self._mapping_key(proto, src, sport, dst, dport)
        mapping = self.mappings.get(key)
        if mapping is None and len(key) > 3:      # a port forward maps its inside endpoint whatever the destination
            static = self.mappings.get((proto, src, sport))
            mapping = static if static is not None and static.static else None
        if mapping is None:
            if self.gone_hosts:
                self._make_room(proto, sport)
            if share and (proto, sport) not in self.by_outside:
                mapping = Mapping(proto, src, sport, sport, shared=True, key=key, filtering=self.filtering)
            else:
                outside = self._allocate(proto, sport)
                if outside is None:
                    return DropReason.PORTS_EXHAUSTED
                mapping = Mapping(proto, src, sport, outside, key=key, filtering=self.filtering)
            self.add_mapping(mapping)
        return self._add(mapping, dst, dport, now)

    def _make_room(self, proto: int, port: int) -> None:
        """A restored mapping whose inside host is gone (it answered no ARP after the restart) gives way to a
        new flow that wants its outside port, so that a state file never blocks a new flow (router.state)."""
        mapping = self.by_outside.get((proto, port))
        if mapping is not None and not mapping.static and mapping.inside_ip in self.gone_hosts:
            for session in [s for s in self.out_sessions.values() if s.mapping is mapping]:
                self.close(session, "host_gone")

    def open_inbound(self, proto: int, src: int, sport: int, dport: int, now: float) -> Session | None:
        """A new flow from the WAN to a mapping, if the filter lets it in (RFC 4787 REQ-8).

        Port forwards accept anyone; other mappings accept, by the filtering
        they were made with, anyone (endpoint-independent), the remote
        addresses they already have sessions with (address-dependent), or no
        one new (address-and-port-dependent: a known remote endpoint's packets
        match its session before they get here).
        """
        mapping = self.by_outside.get((proto, dport))
        if mapping is None or not (mapping.static or self.admits(mapping, src)):
            return None
        if self._check_limits(mapping.inside_ip) is not None:
            return None
        return self._add(mapping, src, sport, now)

    @staticmethod
    def admits(mapping: Mapping, remote_ip: int) -> bool:
        """Whether a new remote endpoint at ``remote_ip`` passes the mapping's filter (RFC 4787 §5)."""
        filtering = mapping.filtering
        return filtering == ENDPOINT_INDEPENDENT or (filtering == ADDRESS_DEPENDENT and mapping.has_remote(remote_ip))

    def shared_sessions(self, proto: int, remote_ip: int, outside_port: int) -> list[Session]:
        """Sessions of shared mappings on ``outside_port`` with ``remote_ip``, whatever its port (cold path)."""
        return [s for key, sessions in self.shared_in.items()
                if key[0] == proto and key[1] == remote_ip and key[4] == outside_port for s in sessions]

    def open_on(self, mapping: Mapping, remote_ip: int, remote_port: int, now: float) -> Session | None:
        """A new inbound flow to a mapping a helper chose (a server answering from another port)."""
        if self._check_limits(mapping.inside_ip) is not None:
            return None
        return self._add(mapping, remote_ip, remote_port, now)

    def limit_reached(self, inside_ip: int) -> bool:
        """Whether one more session for ``inside_ip`` would pass ``limits.sessions`` or ``sessions_per_host``."""
        return self._check_limits(inside_ip) is not None

    def _check_limits(self, inside_ip: int) -> DropReason | None:
        if len(self.out_sessions) >= self.limits.sessions:
            return DropReason.SESSION_LIMIT
        if self.per_host.get(inside_ip, 0) >= self.limits.sessions_per_host:
            return DropReason.SESSION_LIMIT
        return None

    def _add(self, mapping: Mapping, remote_ip: int, remote_port: int, now: float) -> Session:
        session = Session(next(self.ids), mapping, remote_ip, remote_port, self.wan_ip, now)
        session.timeout = self.timeouts.icmp if mapping.proto == IpProto.ICMP else self.timeouts.udp
        self.insert(session)
        return session

    def insert(self, session: Session) -> None:
        """A new session into the tables (its mapping's, made or restored) and the timer heap."""
        mapping = session.mapping
        mapping.add_remote(session.remote_ip)
        mapping.sessions += 1
        self.per_host[mapping.inside_ip] = self.per_host.get(mapping.inside_ip, 0) + 1
        self.out_sessions[session.out_key] = session
        if mapping.shared:
            self.shared_in.setdefault(session.in_key, []).append(session)
        else:
            self.in_sessions[session.in_key] = session
        self.schedule(session)

    def add_mapping(self, mapping: Mapping) -> None:
        """A mapping into the tables: it holds its outside port (shared or not) until ``release``."""
        self.mappings[mapping.key] = mapping
        key = (mapping.proto, mapping.outside_port)
        if mapping.shared:
            self.shared_ports[key] = self.shared_ports.get(key, 0) + 1
        else:
            self.by_outside[key] = mapping

    def release(self, mapping: Mapping) -> None:
        """A mapping with no session left, out of the tables (a port forward's stays)."""
        if mapping.static:
            return
        del self.mappings[mapping.key]
        key = (mapping.proto, mapping.outside_port)
        if not mapping.shared:
            del self.by_outside[key]
        elif self.shared_ports[key] > 1:
            self.shared_ports[key] -= 1
        else:
            del self.shared_ports[key]

    def _allocate(self, proto: int, wanted: int) -> int | None:
        """An outside port by the configured assignment, from the port set if there is one; None if none is free.

        "preserve" keeps the inside port if it is free, else draws at random;
        "random" always draws (RFC 6056 §3.3.1); "sequential" takes the next
        free port after the last one it gave.  Without a port set, RFC 4787
        REQ-3 holds: 0-1023 and 1024-65535 are not mixed; ICMP identifiers may
        be any 16-bit value.
        """
        taken = self._taken
        assignment = self.behaviour.port_assignment
        if assignment == "preserve" and wanted and self.port_allowed(wanted) and not taken(proto, wanted):
            return wanted
        pool = self._pool(proto, wanted)
        span = len(pool)
        if assignment == "sequential":
            start = self._next_port.get(proto, 0)
            for i in range(span):
                port = pool[(start + i) % span]
                if not taken(proto, port):
                    self._next_port[proto] = (start + i + 1) % span
                    return port
            return None
        for _ in range(32):
            port = pool[self.rng.randrange(span)]
            if not taken(proto, port):
                return port
        start = self.rng.randrange(span)
        for i in range(span):
            port = pool[(start + i) % span]
            if not taken(proto, port):
                return port
        return None

    def _pool(self, proto: int, wanted: int):
        """The ports a new mapping may take: the port set, or the range ``wanted`` belongs to."""
        if self._set_ports:
            return self._set_ports
        if proto == IpProto.ICMP:
            return range(1, 65536)
        return range(1, 1024) if wanted < 1024 else range(1024, 65536)

    def _taken(self, proto: int, port: int) -> bool:
        return (proto, port) in self.by_outside or (proto, port) in self.shared_ports

    # -- state and expiry ---------------------------------------------------------------

    def set_tcp_state(self, session: Session, state: TcpState, now: float) -> None:
        """Enter a TCP state and take its lifetime (RFC 6146 §3.5.2.2, RFC 7857 §3.2)."""
        session.state = state
        t = self.timeouts
        if state is TcpState.FIN_BOTH:
            session.fixed_deadline = now + t.tcp_transitory
        else:
            session.fixed_deadline = 0.0
        shorter = state not in ESTABLISHED_LIFETIME and session.timeout > t.tcp_transitory
        session.timeout = self.timeout_for(session)
        if shorter or state is TcpState.FIN_BOTH:
            self.schedule(session)

    def timeout_for(self, session: Session) -> float:
        """The idle timeout of a session in its state (a helper's own timeout aside)."""
        t, state = self.timeouts, session.state
        if session.proto == IpProto.ICMP:
            return t.icmp
        if state is None:
            return t.udp
        if state is TcpState.SYN_IN and session.mapping.static is False:
            return t.tcp_incoming_syn
        return t.tcp_established if state in ESTABLISHED_LIFETIME else t.tcp_transitory

    def schedule(self, session: Session) -> None:
        """Put the session in the timer heap, unless it is there already for an earlier time: then it is looked
        at again then, and rescheduled (so one session has a few entries at most, whatever its packets do)."""
        deadline = session.deadline()
        if session.scheduled and session.scheduled <= deadline:
            return
        session.scheduled = deadline
        heapq.heappush(self._heap, (deadline, next(self._seq), session))

    def next_deadline(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def expire(self, now: float) -> None:
        """Close every session whose deadline has passed."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, _, session = heapq.heappop(heap)
            if session.scheduled == when:
                session.scheduled = 0.0
            if session.closed:
                continue
            deadline = session.deadline()
            if deadline > now:
                self.schedule(session)
            else:
                self.close(session, "timeout")

    def close(self, session: Session, reason: str) -> None:
        if session.closed:
            return
        if self.closing is not None:
            self.closing(session)
        session.closed = True
        self.out_sessions.pop(session.out_key, None)
        mapping = session.mapping
        if mapping.shared:
            peers = self.shared_in.get(session.in_key, [])
            if session in peers:
                peers.remove(session)
            if not peers:
                self.shared_in.pop(session.in_key, None)
        else:
            self.in_sessions.pop(session.in_key, None)
        mapping.sessions -= 1
        mapping.remove_remote(session.remote_ip)
        host_left = self.per_host[session.inside_ip] - 1
        if host_left:
            self.per_host[session.inside_ip] = host_left
        else:
            del self.per_host[session.inside_ip]
        if mapping.sessions == 0:
            self.release(mapping)
        self.closed.append((session, reason))

    def sessions(self) -> list[Session]:
        return list(self.out_sessions.values())
