"""What the parts of the router share: one declared base, so that no part reaches for an undeclared attribute.

``Router`` is made of a core (``router.py``: frames in, ARP, IPv4, sending)
and three parts that each add one concern: the NAT's forwarding paths
(``forward.Forwarding``), the VPN helpers' glue and the switches
(``passthrough.Passthrough``), and the control socket's views
(``views.ControlViews``).  Each part derives from ``RouterCore``, which names
every attribute and method they use of one another; ``Router.__init__`` sets
the attributes, and a test checks that it sets them all.
"""

from __future__ import annotations

from typing import Callable

from ..config import Config
from ..helpers.base import Helper
from .admission import Admission
from .arp import ArpTable
from .events import Counters, DropReason, EventQueue
from .fragments import FragmentTracker
from .nat import NatTable
from .natsession import Ids

LAN, WAN = 0, 1
PORT_NAMES = ("lan", "wan")


class RouterCore:
    """The router's shared state and the few methods every part may call."""

    config: Config
    ports: tuple
    """The LAN and WAN ``PortConfig``."""
    macs: tuple[bytes, bytes]
    addresses: tuple[int, int]
    mtus: tuple[int, int]
    wan_ip: int
    wan_ip_bytes: bytes
    arp: tuple[ArpTable, ArpTable]
    ids: Ids
    """Session ids, shared by NAT sessions and every helper's flows (``new_id``)."""
    nat: NatTable
    fragments: FragmentTracker
    counters: Counters
    events: EventQueue
    outbox: tuple[list[bytearray], list[bytearray]]
    helpers: tuple[Helper, ...]
    ip_handlers: dict[int, Helper]
    """IP protocol without ports -> the helper that finds its flows."""
    modes: dict[str, str]
    """vpn -> "off" | "single" | "multi", one per helper."""
    switches: dict[str, bool]
    """vpn -> on: what the per-frame path reads."""
    admission: Admission
    flows_per_host: dict[int, int]
    unconfirmed: set[int]
    started: float | None
    offload: object | None
    """The fast path's ``Offers`` (``router.fastpath``): told of each frame of a session or flow the NAT paths
    forwarded, to repeat its rewrite; None in a router without one."""
    cache = None
    """The fast path's flow cache (``router.fastpath``), None in a router without one."""
    python_only: str | None = None
    """Why the Python path alone forwards (the fast path is off or not built); None where it is not said."""

    def new_id(self) -> int:
        """A session id unique across NAT sessions and helper flows."""
        return next(self.ids)

    # Provided by ``Router`` (router.py) ------------------------------------------------------------

    def send(self, port: int, dst: int, frame: bytearray, now: float) -> None:
        raise NotImplementedError

    def drop(self, port: int | str, reason: DropReason | str, now: float, summary: str | Callable[[], str] = "",
             count: int = 1) -> None:
        raise NotImplementedError

    def icmp_error(self, port: int, frame: bytearray, icmp_type: int, code: int, now: float,
                   reason: DropReason, rest: int = 0) -> None:
        raise NotImplementedError

    def egress_too_big(self, port: int, frame: bytearray, tot_len: int, frag: int, now: float) -> bool:
        raise NotImplementedError

    def report_opened(self, session, now: float) -> None:
        raise NotImplementedError

    def report_closed(self, now: float) -> None:
        raise NotImplementedError

    # Provided by ``Passthrough`` (passthrough.py) ------------------------------------------------------

    def admit(self, vpn: str, client: int, server: int, now: float, port: int | str = LAN) -> bool:
        raise NotImplementedError

    def hold(self, session, holds: bool) -> None:
        raise NotImplementedError

    def flow_info(self, flow, now: float):
        raise NotImplementedError
