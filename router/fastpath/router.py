"""``FastPathRouter``: the Python router with the flow cache in front (``router/fastpath/__init__.py``).

Everything it adds is on the slow path: a frame the cache does not own comes
here after a ``sync`` and goes through ``Router`` as ever, which tells
``Offers`` (``offers.py``) of what it forwarded; the withdrawals and syncs
below keep the cache to what Python would do.  With the fast path off the
plain ``Router`` runs, and pays for none of this.
"""

from __future__ import annotations

from ..dataplane.arp import parse_arp
from ..dataplane.router import Router
from . import _flowcache
from .entries import apply
from .offers import Offers

receive_frame = Router.receive_frame


class FastPathRouter(Router):
    """A ``Router`` whose established flows are forwarded by the flow cache."""

    python_only = None

    def __init__(self, config, helpers=(), rng=None):
        super().__init__(config, helpers, rng)
        lan, wan = config.lan, config.wan
        self.cache = _flowcache.FlowCache(lan.mac, lan.address, lan.netmask, wan.mac, wan.address, wan.netmask,
                                          lan.mtu, wan.mtu)
        self.offload = Offers(self, self.cache)
        self.nat.closing = self.cache.withdraw

    # -- frames ----------------------------------------------------------------------------------------

    def receive_frame(self, port: int, frame: bytearray, now: float) -> None:
        """The cache's if it has an entry for it, else Python's (after the cache's counts are handed back)."""
        out = self.cache.forward(port, frame, now)
        if out >= 0:
            self.outbox[out].append(frame)
            return
        self.sync()
        receive_frame(self, port, frame, now)

    python_receive = Router.receive_frame
    """A frame the cache has declined, for Python (``drain`` has synced first)."""

    def sync(self) -> None:
        """Hand back what the cache counted since the last sync, where the Python path would have put it (one
        call that returns None when there is nothing)."""
        counted = self.cache.sync()
        if counted is None:
            return
        entries, (lan_frames, lan_bytes, wan_frames, wan_bytes) = counted
        for entry in entries:
            apply(*entry)
        counters = self.counters
        counters["frames_in_lan"] += lan_frames
        counters["bytes_in_lan"] += lan_bytes
        counters["frames_in_wan"] += wan_frames
        counters["bytes_in_wan"] += wan_bytes

    # -- withdrawing: before anything that changes a decision -------------------------------------------

    def _flow_event(self, flow, reason, now):
        if reason is not None:
            self.cache.withdraw(flow)
        super()._flow_event(flow, reason, now)

    def _context(self, helper):
        ctx = super()._context(helper)
        ctx.withdraw = self._withdraw
        return ctx

    def _withdraw(self, owner) -> None:
        """A helper's ``ctx.withdraw`` (bound before ``cache`` exists: it is looked up when called)."""
        self.cache.withdraw(owner)

    def _arp(self, port: int, frame: bytearray, now: float) -> None:
        """A neighbour whose MAC changes (or goes) takes the entries that send to its old MAC."""
        parsed = parse_arp(frame)
        before = self.arp[port].cache.get(parsed[2]) if parsed is not None else None
        super()._arp(port, frame, now)
        if before is not None:
            after = self.arp[port].cache.get(parsed[2])
            if after is None or after.mac != before.mac:
                self.cache.withdraw_mac(port, before.mac)

    def start_capture(self, session_id: int, tap):
        self.sync()
        target = super().start_capture(session_id, tap)
        self.cache.withdraw(target)           # captured frames are Python's: each one goes to the tap
        return target

    def set_passthrough(self, name, value, now):
        self.sync()
        self.cache.clear()
        super().set_passthrough(name, value, now)

    def set_profile(self, name, now):
        self.sync()
        self.cache.clear()
        return super().set_profile(name, now)

    def add_rule(self, entry, position, now):
        self.sync()
        self.cache.clear()
        return super().add_rule(entry, position, now)

    def delete_rule(self, index, now):
        self.sync()
        self.cache.clear()
        return super().delete_rule(index, now)

    def restore(self, records, clock):
        self.cache.clear()
        return super().restore(records, clock)

    # -- reading: after a sync ------------------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        self.sync()
        super().handle_timer(now)

    def get_timer(self):
        self.sync()
        return super().get_timer()

    def close_session(self, session_id, now):
        self.sync()
        return super().close_session(session_id, now)

    def status(self, now: float) -> dict:
        self.sync()
        return super().status(now)

    def session_refs(self) -> list:
        self.sync()
        return super().session_refs()

    def find_session(self, session_id: int):
        self.sync()
        return super().find_session(session_id)

    def state_records(self) -> dict:
        self.sync()
        return super().state_records()

    def dataplane_status(self) -> dict:
        stats = self.cache.stats()
        return {"path": "fast", "why": None, "entries": stats["entries"], "hits": stats["hits"],
                "misses": stats["misses"]}
