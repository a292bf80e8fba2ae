"""What a restart keeps: the router's tables as records of plain values, and taking them up again
(``router.state`` reads and writes the file).

A part of ``Router`` (see ``contract.py``): the NAT writes its mappings with
their sessions (``natrecords``), each helper its own flows through the helper
interface; reading checks every field, and what makes no sense is left out
and counted.
"""

from __future__ import annotations

from ..helpers.base import BadRecord, Record, Restore
from .contract import LAN, RouterCore
from .natrecords import NatRestore, mapping_records


def _section(restore: Restore, kind: str, read, default):
    """A part of the records read with ``read``; ``default`` (and the reason counted) if it makes no sense."""
    try:
        return read()
    except BadRecord as exc:
        restore.drop(kind, str(exc))
        return default


class Restart(RouterCore):
    """``state_records`` and ``restore``."""

    def state_records(self) -> dict:
        """What a restart keeps, as plain values: the NAT's mappings and sessions, each helper's flows, the next
        id. Not neighbours: a restarted router resolves them again."""
        return {"next_id": self.ids.next_id, "mappings": mapping_records(self.nat),
                "flows": {helper.name: helper.flow_records() for helper in self.helpers}}

    def restore(self, records: dict, clock: float) -> Restore:
        """Take up the records of a router that ran before on these ports and addresses (``router.state`` checks
        which); what was taken up and what was left out, and why, is in the ``Restore`` returned.

        This configuration's timeouts, limits, NAT behaviour, passthrough modes and rules apply to what is
        restored; the sessions and flows of a VPN whose passthrough is off are left out."""
        lan = self.ports[LAN]
        restore = Restore(lan.address, lan.prefix_len, self.wan_ip, clock, self.config.limits.sessions,
                          self.config.limits.sessions_per_host)
        top = Record(records)
        flows = _section(restore, "flows", lambda: top.record("flows"), None) or Record({})
        for helper in self.helpers:
            mine = _section(restore, helper.flow_kind, lambda: flows.items(helper.name), [])
            if self.switches[helper.name]:
                helper.restore_flows(mine, restore)
            else:
                for _ in mine:
                    restore.drop(helper.flow_kind, f"{helper.name} passthrough is off")
        for name in set(flows.data) - {helper.name for helper in self.helpers}:
            restore.drop(f"{name} flow", f"no VPN helper {name!r}")
        mappings = _section(restore, "mapping", lambda: top.items("mappings"), [])
        NatRestore(self.nat, restore, {h.name: h for h in self.helpers}, self.switches).mappings(mappings)
        for helper in self.helpers:
            helper.restore_done(restore)
        self._recount_holders()
        next_id = _section(restore, "next_id", lambda: top.integer("next_id", 1, default=1), 1)
        self.ids.next_id = max([next_id, *(i + 1 for i in restore.ids)])
        self.unconfirmed = {s.inside_ip for s in self.nat.out_sessions.values()}
        self.unconfirmed.update(flow.inside_ip for helper in self.helpers for flow in helper.flows())
        return restore

    def _recount_holders(self) -> None:
        """Who holds which VPN, and each host's helper flows, from the sessions and flows there are."""
        for session in self.nat.out_sessions.values():
            if session.holds:
                self.admission.held(session.helper.name, session.inside_ip)
        for helper in self.helpers:
            for flow in helper.flows():
                self.admission.held(flow.vpn, flow.inside_ip)
                self.flows_per_host[flow.inside_ip] = self.flows_per_host.get(flow.inside_ip, 0) + 1
