"""The small interface every VPN passthrough helper implements.

Modelled on Linux's conntrack helpers (``struct nf_conntrack_helper``): a
helper tracks its protocol's state and tells the NAT what to do; the NAT
rewrites addresses and ports.  A helper never does I/O and never reads the
clock: ``now`` comes in as an argument.  It imports ``router.packet`` only,
never the data plane and never another helper.

A helper plugs into the data plane by three kinds of hook, and overrides
only those it needs (every default here does nothing):

**Port-attached** (TCP/UDP flows, as PPTP on TCP 1723): ``attaches_to``
claims a new NAT session by its ports; ``packet`` then sees each of its
packets after the session is found and before its addresses are rewritten,
may rewrite its own protocol's payload in place (same length, fixing the
transport checksum with ``router.packet.checksum``) and answers with a
``Verdict``.  ``closed`` is told when the session ends.

**IP-protocol handlers** (protocols without ports, named in
``ip_protocols``: GRE, ESP): ``flow_out`` and ``flow_in`` find the ``Flow``
a datagram belongs to, or return None (after saying why with
``HelperContext.drop``).  The data plane does the one shared address
rewrite with the flow's precomputed deltas, and counts and forwards.

**Shared outside ports** (IKE on 500, L2TP on 1701): ``shares_port`` asks
the NAT to keep a new flow's inside port on the outside even when other
inside hosts hold it too.  Inbound datagrams to such a port match several
sessions; ``demux`` picks one from the payload, before anything else is
tried.

A helper declares what it is (``helpers/spec.py``): its name, title,
dashboard key and flow nouns, its configuration section and timeouts, how its
flows look (``FlowView``), its counters and drop reasons.  The config parser,
the control socket, ``ctl`` and the dashboard read all of it from the registry
(``helpers/registry.py``), so a protocol is named in its own module only.  The
data plane creates the counters at zero and calls ``expire``/``next_deadline``
with the router's timer.  Its flows are kept by id (``live``): a helper tells
the router of each through ``opened``/``ended``, and the defaults of ``flows``,
``close_flow`` and ``switched_off`` work from that.  For the state file it writes its own records and reads them
back (``flow_records``, ``session_record`` and their ``restore_`` pairs, with
``helpers/records.py``): plain values, never objects.  Nothing a helper raises may escape for a malformed packet:
it checks lengths before it reads (see the tables in ``pptp.py``).
"""

from __future__ import annotations

from enum import Enum
from types import MappingProxyType, SimpleNamespace
from typing import Iterable, Mapping, Protocol, Sized

from ..packet import checksum
from ..packet.frame import ip_str
from .offload import Offload
from .records import BadRecord, Record, Restore, restore_counters  # noqa: F401 - the data plane reads them here
from .spec import FlowView, Option, Timeout


class Verdict(Enum):
    FORWARD = "forward"
    DROP = "drop"


class SessionView(Protocol):
    """What a helper may read of a NAT session it is attached to (``router.dataplane.natsession.Session``), and
    the one field it may write: ``helper_state``, its own state for the session."""
    id: int
    proto: int
    inside_ip: int
    inside_port: int
    outside_port: int
    remote_ip: int
    remote_port: int
    created: float
    last_seen: float
    packets_in: int
    packets_out: int
    bytes_in: int
    bytes_out: int
    closed: bool
    helper_state: object


class Flow:
    """A portless flow a helper owns (a PPTP call's GRE, an IPsec association's ESP).

    The data plane rewrites one address of each datagram with the precomputed
    deltas and keeps the counters; the helper keeps the protocol's state.  The
    attribute names match ``natsession.Session`` where they mean the same, so IP
    fragments follow a flow exactly as they follow a session.
    """

    __slots__ = ("id", "inside_ip", "inside_ip_bytes", "remote_ip", "created", "last_seen", "closed",
                 "packets_in", "packets_out", "bytes_in", "bytes_out", "in_ip_delta", "out_ip_delta", "tap")

    proto = "flow"
    """What ``ctl sessions`` shows as this flow's protocol."""
    vpn = ""
    """The helper (passthrough switch) the flow belongs to."""

    def __init__(self, fid: int, inside_ip: int, remote_ip: int, wan_ip: int, now: float):
        self.id = fid
        self.inside_ip = inside_ip
        self.inside_ip_bytes = inside_ip.to_bytes(4, "big")
        self.remote_ip = remote_ip
        self.created = self.last_seen = now
        self.closed = False
        self.tap = None
        """A callable that gets each forwarded frame, while a capture runs."""
        self.packets_in = self.packets_out = self.bytes_in = self.bytes_out = 0
        self.out_ip_delta = checksum.add(checksum.delta(inside_ip, wan_ip, 4), checksum.TTL_DECREMENT)
        self.in_ip_delta = checksum.add(checksum.delta(wan_ip, inside_ip, 4), checksum.TTL_DECREMENT)

    # What ``ctl sessions`` shows: the flow's endpoints in its protocol's terms.
    def inside(self) -> str:
        return ip_str(self.inside_ip)

    def outside(self, wan_ip: int) -> str:
        return ip_str(wan_ip)

    def remote(self) -> str:
        return ip_str(self.remote_ip)

    def state(self) -> str:
        return "active"

    def view_state(self) -> str:
        return self.state()

    def details(self) -> dict:
        return {}

    def totals(self) -> tuple[int, int, int, int]:
        """packets in, packets out, bytes in, bytes out, as ``ctl sessions`` shows them."""
        return self.packets_in, self.packets_out, self.bytes_in, self.bytes_out

    def tables(self) -> dict[str, tuple[Sized, int]]:
        """The tables it keeps within a bound, by name: (table, the most it may hold)."""
        return {}


class Helper:
    """Base class of the passthrough helpers: every hook present, every default inert."""

    # -- what it is (read by the registry, the config parser, the control socket and the dashboard) ---------

    name = ""
    """Its passthrough switch, config section and ``vpn`` in sessions: a short lower-case word."""
    title = ""
    """How people write the protocol's name ("PPTP")."""
    key = ""
    """Its dashboard key: a lower-case letter turns it on and off, the capital switches single/multi."""
    flow_noun = "flow"
    """What one of its flows is called in words and logs: "call", "tunnel", "association"."""
    flow_nouns = ("flow", "flows")
    """One flow and several, as the dashboard writes them (it may be shorter: "SA", "SAs")."""
    flow_proto = "flow"
    """The ``proto`` of its own flows in ``ctl sessions`` (its NAT sessions keep theirs: "tcp", "udp")."""
    view: FlowView | None = None
    """How its flows look in ``ctl sessions --json`` and on the dashboard."""
    options: tuple[Option, ...] = ()
    """The keys of its own configuration section ``[<name>]`` (none: it has no section)."""
    timeouts: tuple[Timeout, ...] = ()
    """Its keys in ``[timeouts]``; it reads them as ``ctx.timeouts.<key>``."""
    counters: tuple[str, ...] = ()
    """Counters this helper bumps (with ``HelperContext.count``), created at zero."""
    drop_reasons: tuple[str, ...] = ()
    """Reasons this helper drops for (``HelperContext.drop``); each gets a counter ``drop_<reason>``."""
    ip_protocols: tuple[int, ...] = ()
    """IP protocols without ports whose datagrams go to ``flow_out``/``flow_in``."""
    ipv6_inbound: tuple[tuple[int, int], ...] = ()
    """(IP protocol, port; 0 for a protocol without ports) that this VPN's LAN hosts need let in unasked over
    native IPv6: a helper that declares them gets a switch ``ipv6_<name>`` in ``[wan]``, for the IPv6 firewall
    (``router.dataplane.firewall6``; RFC 6092 §3.2.4)."""
    filters_by_address = False
    """Admit inbound flows to this helper's mappings only from addresses the inside host talks to,
    whatever ``nat.filtering`` says (RFC 3715 §3 for IPsec)."""

    def __init__(self, config=None) -> None:
        self.config = config
        own = config.helpers.get(self.name) if config is not None else None
        self.settings: Mapping[str, object] = MappingProxyType(self.defaults() if own is None else dict(own.settings))
        """Its section's values, by key (``options``): the configuration's, or the defaults where it has none."""
        self.ctx: HelperContext | None = None
        self.live: dict[int, Flow] = {}
        """Its live flows by id (``opened``, ``ended``, ``adopt``)."""

    @classmethod
    def defaults(cls) -> dict:
        """Its section's values when the configuration says nothing."""
        return {option.key: option.default for option in cls.options}

    @classmethod
    def default_timeouts(cls) -> dict:
        return {timeout.key: timeout.default for timeout in cls.timeouts}

    @classmethod
    def description(cls) -> dict:
        """What a control client learns of the protocol (``version()["helpers"]``): plain values only."""
        view = cls.view.to_dict() if cls.view is not None else None
        return {"name": cls.name, "title": cls.title or cls.name, "key": cls.key, "noun": list(cls.flow_nouns),
                "flow_noun": cls.flow_noun, "flow_proto": cls.flow_proto, "view": view,
                "counters": list(cls.counters), "drop_reasons": list(cls.drop_reasons),
                "options": {o.key: {"default": o.default, "choices": list(o.choices), "doc": o.doc}
                            for o in cls.options},
                "timeouts": {t.key: {"default": t.default, "doc": t.doc} for t in cls.timeouts}}

    def bind(self, ctx: "HelperContext") -> None:
        """Called once by the router that runs this helper."""
        self.ctx = ctx

    # -- port-attached -----------------------------------------------------------------------

    def attaches_to(self, proto: int, inside_port: int, remote_port: int) -> bool:
        """Whether a new session of this protocol and these ports is this helper's."""
        return False

    def shares_port(self, proto: int, inside_port: int, remote_port: int) -> bool:
        """Whether a new outbound flow keeps its inside port on the outside, shared with other hosts."""
        return False

    def timeout(self, session: SessionView) -> float | None:
        """Idle timeout for a new session of this helper (None: the NAT's default for its protocol)."""
        return None

    def demux(self, candidates: list[SessionView], frame: bytearray, ip: int, l4: int, now: float):
        """Pick the session an inbound datagram to a shared port belongs to, or None to drop it."""
        return None

    def packet(self, session: SessionView, frame: bytearray, ip: int, l4: int, outbound: bool,
               now: float) -> Verdict:
        """One packet of an attached session, before its addresses are translated."""
        return Verdict.FORWARD

    def closed(self, session: SessionView, now: float) -> None:
        """The session ended (timeout, RST, switch turned off)."""

    def describe(self, session: SessionView) -> Iterable[tuple[str, object]]:
        """Extra fields for ``ctl sessions --json`` (such as call IDs)."""
        return ()

    def offload(self, session: SessionView, outbound: bool, frame: bytearray, l4: int) -> Offload | None:
        """Whether more frames like the one of ``session`` just forwarded (``frame``, as it was sent: addresses,
        ports and any ID the helper restored already rewritten; its transport header at ``l4``) may go by the
        fast path, and how (``helpers/offload.py``); None, the default: every frame comes to ``packet``."""
        return None

    # -- IP-protocol handlers -------------------------------------------------------------------

    def flow_out(self, proto: int, frame: bytearray, l4: int, size: int, src: int, dst: int,
                 now: float) -> Flow | None:
        """The flow of a datagram from the LAN (``size``: bytes from ``l4`` on), or None if it is dropped."""
        return None

    def flow_in(self, proto: int, frame: bytearray, l4: int, size: int, src: int, now: float) -> Flow | None:
        """The flow of a datagram from the WAN, with any payload ID restored in place, or None."""
        return None

    def offload_flow(self, flow: Flow, proto: int, outbound: bool, frame: bytearray, l4: int) -> Offload | None:
        """As ``offload``, for a datagram of one of its own flows (``flow_out``, ``flow_in``) just forwarded."""
        return None

    # -- time, switches and views -----------------------------------------------------------------

    def expire(self, now: float) -> None:
        """End what has been idle too long."""

    def next_deadline(self) -> float | None:
        return None

    def switched_off(self, now: float) -> None:
        """The switch went off: end every flow (attached sessions are closed by the NAT)."""
        for flow in list(self.live.values()):
            self.end_flow(flow, "passthrough_off", now)

    def flows(self) -> list[Flow]:
        """The helper's own flows, for ``ctl sessions``."""
        return list(self.live.values())

    def close_flow(self, flow_id: int, now: float, reason: str = "closed_by_request") -> bool:
        """End one flow by its id; False if this helper has no such flow."""
        flow = self.live.get(flow_id)
        if flow is None:
            return False
        self.end_flow(flow, reason, now)
        return True

    def end_flow(self, flow: Flow, reason: str, now: float) -> None:
        """End one of its flows and everything that hangs on it; ``ended`` tells the router."""
        self.ended(flow, reason, now)

    def opened(self, flow: Flow, now: float) -> None:
        """A new flow of this helper: kept by id, and told like a new NAT session."""
        self.live[flow.id] = flow
        self.ctx.flow_opened(flow, now)

    def ended(self, flow: Flow, reason: str, now: float) -> None:
        """A flow of this helper is over: forgotten, and told like a NAT session that closed (which withdraws
        what the fast path has of it)."""
        if self.live.pop(flow.id, None) is flow:
            self.ctx.flow_closed(flow, reason, now)

    def adopt(self, flow: Flow) -> None:
        """A flow restored from the state file: kept, and told to no one (a restart tells nothing)."""
        self.live[flow.id] = flow

    def tables(self) -> dict[str, Sized]:
        """Every table it keeps, by name: each is empty once it has no flow left (the fuzz checks read them)."""
        return {"live": self.live}

    # -- the state file (router.state, helpers/records.py) -------------------------------------------

    @property
    def flow_kind(self) -> str:
        """Its flows' kind in a restore's tally: "pptp call", "l2tp tunnel"..."""
        return f"{self.name} {self.flow_noun}"

    def flow_records(self) -> list[dict]:
        """Its flows that hang on no NAT session, as records (those that do go in ``session_record``)."""
        return []

    def restore_flows(self, records: list, restore: Restore) -> None:
        """Build again the flows ``flow_records`` wrote, each through ``restore.each``; nothing is told."""

    def session_record(self, session: SessionView) -> dict | None:
        """What it keeps on one of its NAT sessions (``session.helper_state``), as a record; None for nothing."""
        return None

    def restore_session(self, session: SessionView, record: Record | None, restore: Restore) -> None:
        """Give a restored NAT session back what ``session_record`` wrote (``record``: None if it wrote nothing).
        Runs before the session is in the NAT's tables; a ``BadRecord`` leaves the session out."""

    def restore_done(self, restore: Restore) -> None:
        """Every record has been read: let go (``restore.undo``) of flows left with nothing to carry them."""


class HelperContext:
    """What a helper may ask of the router: addresses, ids, randomness, timeouts, and a voice.

    The router supplies the callables, so this module names nothing of the
    data plane.
    """

    def __init__(self, vpn: str, wan_ip: int, rng, timeouts, new_id, count, push_event, allow, drop, close_session,
                 flow_event=lambda flow, reason, now: None, admit=lambda vpn, client, server, now: True,
                 room=lambda client, now: True, withdraw=lambda owner: None):
        self.vpn = vpn
        self.wan_ip = wan_ip
        self.rng = rng
        self.timeouts = SimpleNamespace(**timeouts) if isinstance(timeouts, dict) else timeouts
        """The helper's own timeouts (its ``[timeouts]`` keys), as attributes."""
        self.new_id = new_id
        """A session id unique across NAT sessions and every helper's flows."""
        self._count = count
        self._push = push_event
        self._allow = allow
        self._drop = drop
        self.close_session = close_session
        """End a NAT session this helper is attached to: ``close_session(session, reason)``."""
        self._flow_event = flow_event
        self._admit = admit
        self._room = room
        self.withdraw = withdraw
        """``withdraw(owner)``: the fast path forgets the entries an ``Offload`` named ``owner`` in (a session, a
        tunnel, an SPI) before the helper changes what it would do with their frames."""

    def admit(self, client: int, server: int, now: float) -> bool:
        """Whether a new flow this helper opens on its own (not on a NAT session the router admitted), from LAN
        ``client`` to WAN ``server``, may pass: access rules and single passthrough. When it may not, the router
        has counted and told the refusal; the helper drops the packet and makes nothing."""
        return self._admit(self.vpn, client, server, now)

    def room(self, client: int, now: float) -> bool:
        """Whether one more flow for ``client`` fits the router's limits; when it does not, the router has
        counted the refusal (``drop_session_limit``) and the helper makes nothing."""
        return self._room(client, now)

    def flow_opened(self, flow: Flow, now: float) -> None:
        """A new flow (call, tunnel, association): told like a new NAT session (``session_opened``)."""
        self._flow_event(flow, None, now)

    def flow_closed(self, flow: Flow, reason: str, now: float) -> None:
        """A flow ended: told like a NAT session that closed (``session_closed``)."""
        self._flow_event(flow, reason, now)

    def count(self, counter: str, n: int = 1) -> None:
        self._count(counter, n)

    def event(self, kind: str, details: dict, now: float, counter: str | None = None) -> None:
        """A state change worth telling (``call_up``, ``ike_up``...), counted in ``counter`` if given."""
        if counter is not None:
            self._count(counter, 1)
        self._push(now, self.vpn, kind, details)

    def problem(self, kind: str, summary: str, now: float, **details) -> None:
        """Something wrong that does not stop the packet: counted always, told at a limited rate."""
        self._count(kind, 1)
        suppressed = self._allow(kind, now)
        if suppressed is not None:
            self._push(now, self.vpn, kind, {"summary": summary, **details, "suppressed": suppressed})

    def drop(self, reason: str, summary: str, now: float) -> None:
        """The packet is dropped for ``reason`` (one of the helper's ``drop_reasons``)."""
        self._drop(reason, summary, now)
