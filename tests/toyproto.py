"""A fourth VPN protocol, for the tests only: everything it is, it says here (issue 18's proof).

"Toy" carries datagrams of IP protocol 253 (RFC 3692: for experimentation
and testing) whose first payload byte is a tag; a *hop* is one (client,
server, tag).  It has a config section (``[toy] greeting``), a timeout of its
own (``[timeouts] toy``), a dashboard key (``t``), counters, a drop reason,
a flow view and state records, like the real helpers.  Nothing else in the
project names it: ``registered()`` adds it to the registry for a test.
"""

from __future__ import annotations

from contextlib import contextmanager

from router.helpers import registry
from router.helpers.base import BadRecord, Flow, Helper
from router.helpers.records import Record, Restore, flow_record, restore_counters
from router.helpers.spec import FlowView, Option, Timeout
from router.packet.frame import ip_str

TOY_PROTO = 253


class Hop(Flow):
    """One (client, server, tag)."""
    __slots__ = ("tag",)
    proto = "toy"
    vpn = "toy"

    def details(self) -> dict:
        return {"client": ip_str(self.inside_ip), "server": ip_str(self.remote_ip), "tag": self.tag}


class ToyHelper(Helper):
    name = "toy"
    title = "Toy"
    key = "t"
    flow_noun = "hop"
    flow_nouns = ("hop", "hops")
    flow_proto = "toy"
    view = FlowView(fields=("client", "server", "tag"), client="client", server="server", ids="tag {tag}",
                    legend="tag of the hop")
    options = (Option("greeting", "hello", ("hello", "bye"), "What the toy says (it says nothing)."),)
    timeouts = (Timeout("toy", 30.0, "Idle lifetime of a hop."),)
    counters = ("toy_hops",)
    drop_reasons = ("toy_no_hop",)
    ip_protocols = (TOY_PROTO,)

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self.out: dict[tuple[int, int, int], Hop] = {}
        self.inbound: dict[tuple[int, int], Hop] = {}

    def flow_out(self, proto, frame, l4, size, src, dst, now):
        if size < 1:
            self.ctx.drop("toy_no_hop", "empty", now)
            return None
        tag = frame[l4]
        hop = self.out.get((src, dst, tag))
        if hop is None:
            if not self.ctx.admit(src, dst, now) or not self.ctx.room(src, now):
                return None
            hop = Hop(self.ctx.new_id(), src, dst, self.ctx.wan_ip, now)
            hop.tag = tag
            self.out[(src, dst, tag)] = self.inbound[(dst, tag)] = hop
            self.ctx.count("toy_hops")
            self.opened(hop, now)
        return hop

    def flow_in(self, proto, frame, l4, size, src, now):
        hop = self.inbound.get((src, frame[l4])) if size >= 1 else None
        if hop is None:
            self.ctx.drop("toy_no_hop", f"from {ip_str(src)}", now)
        return hop

    def end_flow(self, flow: Hop, reason: str, now: float) -> None:
        self.out.pop((flow.inside_ip, flow.remote_ip, flow.tag), None)
        self.inbound.pop((flow.remote_ip, flow.tag), None)
        flow.closed = True
        self.ended(flow, reason, now)

    def expire(self, now: float) -> None:
        for hop in [h for h in self.live.values() if h.last_seen + self.ctx.timeouts.toy <= now]:
            self.end_flow(hop, "idle", now)

    def next_deadline(self):
        return min((h.last_seen + self.ctx.timeouts.toy for h in self.live.values()), default=None)

    def tables(self) -> dict:
        return {**super().tables(), "out": self.out, "inbound": self.inbound}

    def flow_records(self) -> list[dict]:
        return [{**flow_record(h), "tag": h.tag} for h in self.live.values()]

    def restore_flows(self, records: list, restore: Restore) -> None:
        restore.each(self.flow_kind, records, lambda r: self._restore(r, restore))

    def _restore(self, r: Record, restore: Restore) -> Hop:
        inside, remote, tag = restore.inside(r, "inside_ip"), restore.remote(r, "remote_ip"), r.integer("tag", 0, 255)
        if (remote, tag) in self.inbound:
            raise BadRecord(f"tag {tag} towards {ip_str(remote)} twice")
        created, last_seen = restore.times(r)
        restore.take_flow(inside)
        hop = Hop(restore.claim(r), inside, remote, self.ctx.wan_ip, created)
        hop.tag, hop.last_seen = tag, last_seen
        restore_counters(hop, r)
        self.out[(inside, remote, tag)] = self.inbound[(remote, tag)] = hop
        self.adopt(hop)
        return hop


@contextmanager
def registered(cls: type[Helper] = ToyHelper):
    """The registry with ``cls`` added (a test-only registry), as it was afterwards."""
    registry.register(cls)
    try:
        yield cls
    finally:
        registry.unregister(cls.name)
