"""The VPN helpers' glue: binding them, their switches, profiles and access rules, and what their flows do to
the router's books (who holds a single passthrough, each host's flows).

A part of ``Router`` (see ``contract.py``).  Helpers are handed in from the
registry (``router.helpers.registry``); the switches are theirs, one per
helper, so a helper the configuration does not name is on in multi mode.
"""

from __future__ import annotations

from dataclasses import replace

from ..behaviour import PROFILES, parse_rule
from ..helpers.base import Flow, Helper, HelperContext
from ..packet.frame import ip_str
from .contract import LAN, RouterCore
from .events import Counters, DropReason, ProfileChanged, SessionClosed, SessionOpened, SwitchChanged, VpnEvent


class Passthrough(RouterCore):
    """Helpers, switches, profiles, rules."""

    helper_named: dict[str, Helper]

    def init_switches(self) -> None:
        """One switch per helper, in the mode the configuration gives it ("multi" if it names none)."""
        self.helper_named = {}
        self.modes = {h.name: self.config.passthrough.get(h.name, "multi") for h in self.helpers}
        self.switches = {name: mode != "off" for name, mode in self.modes.items()}
        self._mode_when_on = {name: mode if mode != "off" else "multi" for name, mode in self.modes.items()}

    def set_passthrough(self, name: str, value: bool | str, now: float) -> None:
        """A protocol's passthrough: True or "on" (the mode it had before it went off), False or "off" (which
        tears down its live sessions), "single" or "multi". Sessions already up stay up in single mode."""
        if name not in self.switches:
            raise KeyError(name)
        if value is True or value == "on":
            mode = self._mode_when_on[name]
        elif value is False or value == "off":
            mode = "off"
        elif value in ("single", "multi"):
            mode = value
        else:
            raise ValueError(f"passthrough {name}: on, off, single or multi, not {value!r}")
        on = mode != "off"
        if on:
            self._mode_when_on[name] = mode
        if self.modes[name] != mode:
            self.modes[name] = mode
            self.switches[name] = on
            self.events.push(SwitchChanged(now, name, on, mode))
        if not on:
            for session in self.nat.sessions():
                if session.helper is not None and session.helper.name == name:
                    self.nat.close(session, "passthrough_off")
            self.report_closed(now)   # each helper's closed() ends what hangs on the session
            self.helper_named[name].switched_off(now)

    def set_profile(self, name: str, now: float) -> dict:
        """Apply a named profile to new sessions: its NAT behaviour and passthrough modes (existing sessions keep
        the behaviour they were made with)."""
        profile = PROFILES.get(name)
        if profile is None:
            raise LookupError(f"no profile {name!r} (known: {', '.join(PROFILES)})")
        behaviour = profile.nat
        if self.config.wan_link is not None and self.config.wan_link.ce is not None:
            behaviour = replace(behaviour, port_set=self.config.wan_link.ce.port_set)   # MAP-E's, always
        self.nat.set_behaviour(behaviour)
        for vpn in self.switches:
            self.set_passthrough(vpn, profile.passthrough, now)
        nat = behaviour.to_dict()
        self.events.push(ProfileChanged(now, name, tuple(nat.items())))
        return nat

    def add_rule(self, entry: dict, position: int | None, now: float) -> dict:
        """A ``[[passthrough.rule]]`` at run time (``ValueError`` naming what is wrong)."""
        self.admission.add_rule(parse_rule(entry, "rule"), position)
        return self.admission.view()

    def delete_rule(self, index: int, now: float) -> dict:
        self.admission.delete_rule(index)
        return self.admission.view()

    def hold(self, session, holds: bool) -> None:
        """Count a helper's NAT session towards its client holding the VPN (single passthrough), or stop."""
        if session.holds != holds:
            session.holds = holds
            (self.admission.held if holds else self.admission.released)(session.helper.name, session.inside_ip)

    def admit(self, vpn: str, client: int, server: int, now: float, port: int | str = LAN) -> bool:
        """Whether a VPN attempt from LAN ``client`` to WAN ``server`` may pass (rules, single passthrough);
        a refusal is counted, and told as a ``vpn`` event (rate limited per client). A single passthrough held
        through restored sessions by a host that answers no more is let go first."""
        gone = self.nat.gone_hosts
        while gone and self.modes.get(vpn) == "single" and (holder := self.admission.holder(vpn)) in gone \
                and holder != client:
            self._end_vpn_of(vpn, holder, "host_gone", now)
        refusal = self.admission.decide(vpn, client, server)
        if refusal is None:
            return True
        details = refusal.details
        self.drop(port, refusal.drop_reason, now, f"{vpn} {details['client']} -> {details['server']}")
        suppressed = self.events.allow((refusal.kind, vpn, client), now)
        if suppressed is not None:
            self.events.push(VpnEvent(now, vpn, refusal.kind, tuple({**details, "suppressed": suppressed}.items())))
        return False

    def _end_vpn_of(self, vpn: str, host: int, reason: str, now: float) -> None:
        """End every session and flow of ``vpn`` that LAN ``host`` has."""
        for session in self.nat.sessions():
            if session.helper is not None and session.helper.name == vpn and session.inside_ip == host:
                self.nat.close(session, reason)
        self.report_closed(now)
        helper = self.helper_named[vpn]
        for flow in [f for f in helper.flows() if f.inside_ip == host]:
            helper.close_flow(flow.id, now, reason)
        self.report_closed(now)
        self.admission.holders.get(vpn, {}).pop(host, None)     # whatever was counted, it holds nothing now

    def close_session(self, session_id: int, now: float) -> bool:
        """End a NAT session or a helper's flow by its id; False if there is none."""
        for session in self.nat.sessions():
            if session.id == session_id:
                self.nat.close(session, "closed_by_request")
                self.report_closed(now)
                return True
        closed = any(helper.close_flow(session_id, now) for helper in self.helpers)
        self.report_closed(now)     # NAT sessions the helper closed with its flow
        return closed

    def bind_helpers(self) -> None:
        """Each helper gets its context, its counters at zero and its IP protocols: the one place helpers are
        plugged in."""
        self.counters = Counters(tuple(c for h in self.helpers for c in h.counters),
                                 tuple(r for h in self.helpers for r in h.drop_reasons))
        for helper in self.helpers:
            self.helper_named[helper.name] = helper
            helper.bind(self._context(helper))
            for proto in helper.ip_protocols:
                self.ip_handlers[proto] = helper

    def _context(self, helper: Helper) -> HelperContext:
        counters, events = self.counters, self.events

        def bump(name: str, n: int) -> None:
            counters[name] = counters.get(name, 0) + n

        vpn = helper.name
        own = self.config.helpers.get(vpn)
        timeouts = dict(own.timeouts) if own is not None else helper.default_timeouts()
        return HelperContext(
            vpn, self.wan_ip, self.nat.rng, timeouts, self.new_id, bump,
            lambda now, v, kind, details: events.push(VpnEvent(now, v, kind, tuple(details.items()))),
            events.allow, lambda reason, summary, now: self.drop(vpn, reason, now, summary), self._close,
            self._flow_event, lambda v, client, server, now: self.admit(v, client, server, now, vpn),
            lambda client, now: self.room_for_flow(vpn, client, now))

    def _flow_event(self, flow: Flow, reason: str | None, now: float) -> None:
        flows = self.flows_per_host
        if reason is None:
            self.admission.held(flow.vpn, flow.inside_ip)
            flows[flow.inside_ip] = flows.get(flow.inside_ip, 0) + 1
        else:
            self.admission.released(flow.vpn, flow.inside_ip)
            left = flows.get(flow.inside_ip, 0) - 1
            if left > 0:
                flows[flow.inside_ip] = left
            else:
                flows.pop(flow.inside_ip, None)
        info = self.flow_info(flow, now)
        self.events.push(SessionOpened(now, info) if reason is None else SessionClosed(now, info, reason))

    def room_for_flow(self, vpn: str, client: int, now: float) -> bool:
        """Whether a helper may open one more flow for ``client``: helper flows are held to ``limits.sessions`` and
        ``limits.sessions_per_host`` as NAT sessions are (a budget of their own); a refusal is a drop."""
        limits, flows = self.config.limits, self.flows_per_host
        if sum(flows.values()) < limits.sessions and flows.get(client, 0) < limits.sessions_per_host:
            return True
        self.drop(vpn, DropReason.SESSION_LIMIT, now, f"{vpn} flow from {ip_str(client)}")
        return False

    def _close(self, session, reason: str) -> None:
        self.nat.close(session, reason)
