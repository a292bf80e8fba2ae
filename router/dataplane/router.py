"""The router: a pure, sans-IO data plane.

Theory of operation
-------------------
``receive_frame(port, frame, now)`` takes one frame as a TAP with a
virtio-net header gives it (see ``router.packet.frame``) and appends what must
be sent to ``outbox[port]``; ``handle_timer(now)`` does the work that time
brings (expiry, ARP retries) and ``get_timer()`` says when to call it next;
``next_event()`` hands out what happened.  Nothing here reads the clock,
sleeps or touches a file descriptor, so tests drive it with frames and times.

A frame is forwarded by rewriting it in place and appending that same
``bytearray`` to the outbox: the hot path allocates no frame.  Frames that
the router makes (ARP, ICMP) are new ``bytearray`` objects.

Ports are numbered: ``LAN`` (0) and ``WAN`` (1).  The WAN address is the NAT's
only outside address.

Passthrough helpers (``router.helpers``) are built from the configuration by
whoever makes the router and handed in; the router binds each to a
``HelperContext`` and routes to them by the hooks they declare.  Nothing here
names a VPN protocol.
"""

from __future__ import annotations

import random
import struct

from ..config import Config
from ..packet import checksum
from ..packet.arp import ArpOp, arp_frame, gratuitous_arp
from ..packet.frame import ETH_OFFSET, EtherType, IP_DF, IP_MF, IP_OFFSET, IPV4, IpProto, ip_str, is_unicast
from ..packet.ipv4 import IcmpType, Unreachable, fragment
from .arp import ArpTable, parse_arp
from ..helpers.base import BadRecord, Flow, Helper, HelperContext, Record, Restore
from ..behaviour import PROFILES, parse_rule
from .admission import Admission
from .events import (Counters, DropReason, EventQueue, LazyInfo, ProfileChanged, SessionClosed, SessionInfo,
                     SessionOpened, SwitchChanged, VpnEvent)
from .forward import Forwarding
from .fragments import FragmentTracker
from .icmp import echo_reply, error_datagram
from .nat import Ids, NatTable
from .natrecords import NatRestore, mapping_records

LAN, WAN = 0, 1
PORT_NAMES = ("lan", "wan")


def _section(restore: Restore, kind: str, read, default):
    """A part of the records read with ``read``; ``default`` (and the reason counted) if it makes no sense."""
    try:
        return read()
    except BadRecord as exc:
        restore.drop(kind, str(exc))
        return default

FRAMES_IN = ("frames_in_lan", "frames_in_wan")
BYTES_IN = ("bytes_in_lan", "bytes_in_wan")
IP = IP_OFFSET
MIN_IP_FRAME = IP + 20


class Router(Forwarding):
    """Two Ethernet ports, IPv4 routing between them, NAPT on the WAN address."""

    def __init__(self, config: Config, helpers: tuple[Helper, ...] = (), rng: random.Random | None = None):
        self.config = config
        lan, wan = config.lan, config.wan
        self.ports = (lan, wan)
        self.macs = (lan.mac, wan.mac)
        self.addresses = (lan.address, wan.address)
        self.lan_ip, self.wan_ip = lan.address, wan.address
        self.wan_ip_bytes = wan.address.to_bytes(4, "big")
        self.lan_net, self.lan_mask = lan.network, lan.netmask
        self.wan_net, self.wan_mask = wan.network, wan.netmask
        self.lan_bcast, self.wan_bcast = lan.broadcast, wan.broadcast
        self.mtus = (lan.mtu, wan.mtu)
        t, limits = config.timeouts, config.limits
        self.arp = tuple(ArpTable(p.mac, p.address, t.arp_cache, t.arp_retry, limits.arp_queue,
                                  limits.arp_pending) for p in self.ports)
        self.ids = Ids()
        self.nat = NatTable(wan.address, t, limits, config.nat, config.forwards, rng, self.ids)
        self.fragments = FragmentTracker(t.fragment, limits.fragments)
        self.helpers: tuple[Helper, ...] = tuple(helpers)
        self.counters = Counters(sum((h.counters for h in self.helpers), ()),
                                 sum((h.drop_reasons for h in self.helpers), ()))
        self.events = EventQueue()
        self.modes: dict[str, str] = dict(config.passthrough)
        """vpn -> "off" | "single" | "multi"."""
        self.switches = {name: mode != "off" for name, mode in self.modes.items()}
        """vpn -> on: what the per-frame path reads."""
        self._mode_when_on = {name: mode if mode != "off" else "multi" for name, mode in self.modes.items()}
        self.admission = Admission(self.modes, config.rules, config.default_action)
        self.ip_handlers: dict[int, Helper] = {}
        """IP protocol without ports -> the helper that finds its flows."""
        for helper in self.helpers:
            helper.bind(self._context(helper.name))
            for proto in helper.ip_protocols:
                self.ip_handlers[proto] = helper
        self.outbox: tuple[list[bytearray], list[bytearray]] = ([], [])
        self.flows_per_host: dict[int, int] = {}
        """LAN host -> its live helper flows (calls, tunnels, associations), held to the session limits."""
        self.started: float | None = None
        self.unconfirmed: set[int] = set()
        """LAN hosts of restored sessions and flows not heard from since the restart (``restore``)."""
        self._icmp_second = 0
        self._icmp_sent = 0

    # -- the sans-IO surface ----------------------------------------------------------------

    def start(self, now: float) -> None:
        """Announce the router's addresses on both ports (RFC 5227 §3), and ask for the LAN hosts of restored
        sessions: those that answer no more give way to new flows (``nat.gone_hosts``)."""
        self.started = now
        for port in (LAN, WAN):
            self.outbox[port].append(gratuitous_arp(self.macs[port], self.addresses[port]))
        for host in sorted(self.unconfirmed):
            request = self.arp[LAN].probe(host, now)
            if request is not None:
                self.counters["arp_requests_sent"] += 1
                self.outbox[LAN].append(request)

    def receive_frame(self, port: int, frame: bytearray, now: float) -> None:
        """One frame from ``port``; what it causes lands in ``outbox``."""
        counters = self.counters
        counters[FRAMES_IN[port]] += 1
        counters[BYTES_IN[port]] += len(frame)
        if len(frame) < IP:
            return self.drop(port, DropReason.TRUNCATED, now)
        if frame[24] == 0x08 and frame[25] == 0x00:
            if not frame.startswith(self.macs[port], ETH_OFFSET):
                counters["ignored_other_mac"] += 1
                return
            return self._ipv4(port, frame, now)
        ethertype = frame[24] << 8 | frame[25]
        if ethertype == EtherType.ARP:
            return self._arp(port, frame, now)
        return self.drop(port, DropReason.NON_IPV4, now, f"ethertype 0x{ethertype:04x}")

    # -- the state file (router.state) ---------------------------------------------------------------

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

    def handle_timer(self, now: float) -> None:
        self.nat.expire(now)
        self.report_closed(now)
        for helper in self.helpers:
            helper.expire(now)
        self.fragments.expire(now)
        if self.fragments.dropped:
            self.counters["drop_fragment_orphaned"] += self.fragments.dropped
            self.fragments.dropped = 0
        for port in (LAN, WAN):
            requests, dropped, unanswered = self.arp[port].tick(now)
            self.outbox[port].extend(requests)
            self.counters["arp_requests_sent"] += len(requests)
            if dropped:
                self.drop(port, DropReason.ARP_UNRESOLVED, now, f"{dropped} frames", count=dropped)
            if port == LAN and self.unconfirmed:
                self._gone(unanswered)

    def _gone(self, unanswered: list[int]) -> None:
        """Restored hosts that answered no ARP: their mappings give way to new flows (``nat._make_room``)."""
        for host in unanswered:
            if host in self.unconfirmed:
                self.unconfirmed.discard(host)
                self.nat.gone_hosts.add(host)

    def get_timer(self) -> float | None:
        deadlines = [d for d in (self.nat.next_deadline(), self.fragments.next_deadline(),
                                 self.arp[LAN].next_deadline(), self.arp[WAN].next_deadline(),
                                 *(h.next_deadline() for h in self.helpers)) if d is not None]
        return min(deadlines) if deadlines else None

    def next_event(self):
        return self.events.pop()

    def take_outbox(self, port: int) -> list[bytearray]:
        frames, self.outbox[port][:] = list(self.outbox[port]), []
        return frames

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
            self.report_closed(now)   # each helper's closed() ends what hangs on the session (PPTP: its calls)
            for helper in self.helpers:
                if helper.name == name:
                    helper.switched_off(now)

    def set_profile(self, name: str, now: float) -> dict:
        """Apply a named profile to new sessions: its NAT behaviour and passthrough modes (existing sessions keep
        the behaviour they were made with)."""
        profile = PROFILES.get(name)
        if profile is None:
            raise LookupError(f"no profile {name!r} (known: {', '.join(PROFILES)})")
        self.nat.set_behaviour(profile.nat)
        for vpn, mode in profile.passthrough:
            if vpn in self.switches:
                self.set_passthrough(vpn, mode, now)
        nat = profile.nat.to_dict()
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
        for helper in self.helpers:
            if helper.name == vpn:
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

    # -- bookkeeping ---------------------------------------------------------------------------

    def drop(self, port: int | str, reason: DropReason | str, now: float, summary="", count: int = 1) -> None:
        """Count a drop, and tell it (rate limited); ``summary``: a string, or a callable that makes one."""
        reason = reason.value if isinstance(reason, DropReason) else reason
        key = "drop_" + reason
        self.counters[key] = self.counters.get(key, 0) + count   # a helper's undeclared reason still counts
        self.events.drop(now, reason, port if isinstance(port, str) else PORT_NAMES[port], summary)

    def report_opened(self, session, now: float) -> None:
        self.counters["sessions_created"] += 1
        self.events.push(SessionOpened(now, LazyInfo(session, now, self.wan_ip)))

    def report_closed(self, now: float) -> None:
        closed = self.nat.closed
        while closed:
            session, reason = closed.pop(0)
            if session.helper is not None:
                session.helper.closed(session, now)
                self.hold(session, False)
            self.counters["sessions_closed"] += 1
            self.events.push(SessionClosed(now, LazyInfo(session, now, self.wan_ip), reason))

    # -- ARP -------------------------------------------------------------------------------

    def _arp(self, port: int, frame: bytearray, now: float) -> None:
        parsed = parse_arp(frame)
        if parsed is None:
            return self.drop(port, DropReason.BAD_ARP, now)
        op, sender_mac, sender_ip, target_ip = parsed
        table = self.arp[port]
        own_ip = self.addresses[port]
        if sender_ip == own_ip:
            return self.drop(port, DropReason.BAD_ARP, now, f"{ip_str(sender_ip)} claims our address")
        # RFC 826 "merge": refresh a known sender; learn it when the packet is for us.
        if sender_ip and self._on_link(port, sender_ip) and (sender_ip in table.cache or target_ip == own_ip):
            for waiting in table.learn(sender_ip, sender_mac, now):
                self.outbox[port].append(waiting)
            if port == LAN and (self.unconfirmed or self.nat.gone_hosts):
                self.unconfirmed.discard(sender_ip)      # a restored host that answers is here
                self.nat.gone_hosts.discard(sender_ip)
        if op == ArpOp.REQUEST and target_ip == own_ip and sender_ip:
            self.counters["arp_replies_sent"] += 1
            self.outbox[port].append(arp_frame(ArpOp.REPLY, self.macs[port], own_ip, sender_mac, sender_ip,
                                               eth_dst=sender_mac))

    def _on_link(self, port: int, addr: int) -> bool:
        if port == LAN:
            return addr & self.lan_mask == self.lan_net
        return addr & self.wan_mask == self.wan_net

    # -- IPv4 ------------------------------------------------------------------------------

    def _ipv4(self, port: int, frame: bytearray, now: float) -> None:
        """Validate the IPv4 header (RFC 1812 §5.2.2), then route by port and destination."""
        size = len(frame)
        if size < MIN_IP_FRAME:
            return self.drop(port, DropReason.TRUNCATED, now)
        vihl, _, tot_len, ident, frag, ttl, proto, _, src, dst = IPV4.unpack_from(frame, IP)
        if vihl == 0x45:
            ihl = 20
            # RFC 1071: the one's complement sum is 0xFFFF exactly when the header, read as one
            # number, is a multiple of 0xFFFF (2**16 is 1 modulo 0xFFFF), and it is not zero here.
            header_ok = not int.from_bytes(frame[IP:IP + 20], "big") % 0xFFFF
        else:
            ihl = (vihl & 15) * 4
            if vihl >> 4 != 4 or ihl < 20 or size < IP + ihl:
                return self.drop(port, DropReason.BAD_IP_HEADER, now, f"version/IHL 0x{vihl:02x}")
            header_ok = checksum.ones_sum(frame, IP, IP + ihl) == 0xFFFF
        if tot_len < ihl or IP + tot_len > size:
            return self.drop(port, DropReason.BAD_IP_HEADER, now, f"total length {tot_len}")
        if not header_ok:
            return self.drop(port, DropReason.BAD_IP_CHECKSUM, now, f"{ip_str(src)} -> {ip_str(dst)}")
        if IP + tot_len < size:
            del frame[IP + tot_len:]  # Ethernet padding
        if port == LAN:
            return self._from_lan(frame, ihl, tot_len, ident, frag, ttl, proto, src, dst, now)
        return self._from_wan(frame, ihl, tot_len, ident, frag, ttl, proto, src, dst, now)

    def _from_lan(self, frame, ihl, tot_len, ident, frag, ttl, proto, src, dst, now) -> None:
        if src & self.lan_mask != self.lan_net or src == self.lan_ip or src == self.lan_bcast \
                or not is_unicast(src):
            return self.drop(LAN, DropReason.SPOOFED_SOURCE, now, f"source {ip_str(src)}")
        if dst == self.lan_ip or (dst == self.wan_ip and proto == IpProto.ICMP and tot_len > ihl
                                  and frame[IP + ihl] == IcmpType.ECHO_REQUEST):
            return self._local(LAN, frame, ihl, frag, proto, src, dst, now)
        if dst == self.lan_bcast or not is_unicast(dst):
            return self.drop(LAN, DropReason.MARTIAN, now, f"destination {ip_str(dst)}")
        if ttl <= 1:
            return self._icmp_error(LAN, frame, IcmpType.TIME_EXCEEDED, 0, now, DropReason.TTL_EXCEEDED)
        if dst & self.lan_mask == self.lan_net:
            return self._route_plain(LAN, frame, tot_len, frag, dst, now)
        if frag & (IP_MF | 0x1FFF):
            return self.forward_fragment(frame, ihl, tot_len, ident, frag, proto, src, dst, True, now)
        return self.forward_out(frame, ihl, tot_len, frag, proto, src, dst, now)

    def _from_wan(self, frame, ihl, tot_len, ident, frag, ttl, proto, src, dst, now) -> None:
        if dst != self.wan_ip:
            reason = DropReason.NOT_ROUTABLE if is_unicast(dst) else DropReason.MARTIAN
            return self.drop(WAN, reason, now, f"destination {ip_str(dst)}")
        if src & self.lan_mask == self.lan_net or src == self.wan_bcast or not is_unicast(src):
            return self.drop(WAN, DropReason.MARTIAN, now, f"source {ip_str(src)}")
        if proto == IpProto.ICMP and not frag & 0x1FFF and tot_len > ihl \
                and frame[IP + ihl] == IcmpType.ECHO_REQUEST:
            return self._local(WAN, frame, ihl, frag, proto, src, dst, now)
        if ttl <= 1:
            return self._icmp_error(WAN, frame, IcmpType.TIME_EXCEEDED, 0, now, DropReason.TTL_EXCEEDED)
        if frag & (IP_MF | 0x1FFF):
            return self.forward_fragment(frame, ihl, tot_len, ident, frag, proto, src, dst, False, now)
        return self.forward_in(frame, ihl, tot_len, frag, proto, src, dst, now)

    def _local(self, port, frame, ihl, frag, proto, src, dst, now) -> None:
        """Datagrams for the router itself: it answers pings and refuses the rest."""
        if frag & (IP_MF | 0x1FFF):
            return self.drop(port, DropReason.UNSUPPORTED_PROTOCOL, now, "fragment for the router")
        if proto == IpProto.ICMP and len(frame) >= IP + ihl + 8 and frame[IP + ihl] == IcmpType.ECHO_REQUEST:
            reply = echo_reply(frame, ihl)
            if reply is None:
                return self.drop(port, DropReason.BAD_ICMP_CHECKSUM, now, f"echo from {ip_str(src)}")
            self.counters["echo_replies_sent"] += 1
            return self.send(port, src, reply, now)
        if proto == IpProto.UDP and port == LAN:
            return self._icmp_error(LAN, frame, IcmpType.DEST_UNREACHABLE, Unreachable.PORT, now,
                                    DropReason.UNSUPPORTED_PROTOCOL)
        self.drop(port, DropReason.UNSUPPORTED_PROTOCOL, now, f"protocol {proto} to the router")

    def _route_plain(self, port, frame, tot_len, frag, dst, now) -> None:
        """Forward without translation (LAN to LAN through the router)."""
        frame[IP + 8] -= 1
        csum = frame[IP + 10] << 8 | frame[IP + 11]
        struct.pack_into("!H", frame, IP + 10, checksum.update(csum, checksum.TTL_DECREMENT))
        self.send(port, dst, frame, now)

    # -- sending -----------------------------------------------------------------------------

    def egress_too_big(self, port: int, frame: bytearray, tot_len: int, frag: int, now: float) -> bool:
        """RFC 1191 / RFC 4787 REQ-11: refuse a DF datagram larger than the egress MTU.

        GSO super-frames are exempt: the kernel cuts them into MTU-sized segments.
        """
        mtu = self.mtus[port]
        if tot_len <= mtu or frame[1] or not frag & IP_DF:
            return False
        self._icmp_error(1 - port, frame, IcmpType.DEST_UNREACHABLE, Unreachable.FRAG_NEEDED, now,
                         DropReason.FRAG_NEEDED, rest=mtu)
        return True

    def send(self, port: int, dst: int, frame: bytearray, now: float) -> None:
        """Route a datagram out of ``port`` towards ``dst``: fragment it if needed, resolve the next hop."""
        if len(frame) - IP > self.mtus[port] and not frame[1]:
            pieces = fragment(frame, self.mtus[port])
            self.counters["fragments_made"] += len(pieces)
            for piece in pieces:
                self.send(port, dst, piece, now)
            return
        if port == WAN and dst & self.wan_mask != self.wan_net:
            hop = self.ports[WAN].gateway
            if hop is None:
                return self.drop(WAN, DropReason.NOT_ROUTABLE, now, f"no gateway for {ip_str(dst)}")
        else:
            hop = dst
        table = self.arp[port]
        entry = table.cache.get(hop)
        if entry is not None:
            frame[12:26] = entry.prefix
            self.outbox[port].append(frame)
            if now > entry.expires:
                request = table.revalidate(hop, entry, now)
                if request is not None:
                    self.counters["arp_requests_sent"] += 1
                    self.outbox[port].append(request)
            return
        queued, request = table.enqueue(hop, frame, now)
        if not queued:
            return self.drop(port, DropReason.ARP_QUEUE_FULL, now, f"next hop {ip_str(hop)}")
        if request is not None:
            self.counters["arp_requests_sent"] += 1
            self.outbox[port].append(request)

    def _icmp_error(self, port: int, frame: bytearray, icmp_type: int, code: int, now: float,
                    reason: DropReason, rest: int = 0) -> None:
        """Drop ``frame`` (from ``port``) for ``reason`` and tell its sender, rate limited."""
        src = int.from_bytes(frame[IP + 12:IP + 16], "big")
        self.drop(port, reason, now, f"from {ip_str(src)}")
        second = int(now)
        if second != self._icmp_second:
            self._icmp_second, self._icmp_sent = second, 0
        if self._icmp_sent >= self.config.limits.icmp_errors_per_second:
            self.counters["icmp_errors_rate_limited"] += 1
            return
        datagram = error_datagram(self.addresses[port], frame, icmp_type, code, rest)
        if datagram is None:
            return
        self._icmp_sent += 1
        self.counters["icmp_errors_sent"] += 1
        out = bytearray(IP)  # virtio-net header and Ethernet header, filled in by send()
        out += datagram
        self.send(port, src, out, now)

    # -- views for the control socket ---------------------------------------------------------

    def status(self, now: float) -> dict:
        self.counters["events_lost"] = self.events.lost
        return {
            "passthrough": dict(self.switches),
            "passthrough_mode": dict(self.modes),
            "passthrough_holder": {vpn: ip_str(h) if (h := self.admission.holder(vpn)) is not None
                                   and self.modes[vpn] == "single" else None for vpn in self.modes},
            "nat": self.nat.behaviour.to_dict(),
            "rules": {"default_action": self.admission.default_action, "count": len(self.admission.rules)},
            "counters": dict(self.counters),
            "uptime": round(now - self.started, 3) if self.started is not None else 0.0,
            "sessions": len(self.nat),
            "mappings": len(self.nat.mappings),
            "arp": {PORT_NAMES[p]: {ip_str(ip): e.mac.hex(":") for ip, e in self.arp[p].cache.items()}
                    for p in (LAN, WAN)},
            "ports": {PORT_NAMES[p]: {"address": f"{ip_str(c.address)}/{c.prefix_len}", "mac": c.mac.hex(":"),
                                      "mtu": c.mtu, "tap": c.tap} for p, c in enumerate(self.ports)},
            "limits": {"sessions": self.config.limits.sessions,
                       "sessions_per_host": self.config.limits.sessions_per_host},
        }

    def session_infos(self, now: float) -> list:
        return [self.info_of(ref, now) for ref in self.session_refs()]

    def session_refs(self) -> list:
        """Every NAT session and helper flow, cheaply (a list copy): the control socket converts them a chunk
        at a time with ``info_of``."""
        refs = list(self.nat.out_sessions.values())
        for helper in self.helpers:
            refs += helper.flows()
        return refs

    def info_of(self, ref, now: float) -> SessionInfo:
        return self.flow_info(ref, now) if isinstance(ref, Flow) else ref.info(now, self.wan_ip)

    @staticmethod
    def brief(obj, now: float) -> tuple:
        """(id, state, idle, packets in, packets out, bytes in, bytes out): what ``sessions_updated`` tells."""
        return (obj.id, obj.view_state(), round(max(0.0, now - obj.last_seen), 3), *obj.totals())

    def find_session(self, session_id: int):
        """A live NAT session or helper flow by id (cold path: a linear scan)."""
        return next((obj for obj in self.session_refs() if obj.id == session_id), None)

    def flow_info(self, flow: Flow, now: float) -> SessionInfo:
        """A helper's flow as a session: its protocol's IDs stand where ports would."""
        packets_in, packets_out, bytes_in, bytes_out = flow.totals()
        return SessionInfo(
            id=flow.id, proto=flow.proto, inside=flow.inside(), outside=flow.outside(self.wan_ip),
            remote=flow.remote(), state=flow.state(), idle=round(max(0.0, now - flow.last_seen), 3),
            age=round(max(0.0, now - flow.created), 3), packets_in=packets_in, packets_out=packets_out,
            bytes_in=bytes_in, bytes_out=bytes_out, vpn=flow.vpn, details=tuple(flow.details().items()))

    def _context(self, vpn: str) -> HelperContext:
        counters, events = self.counters, self.events

        def bump(name: str, n: int) -> None:
            counters[name] = counters.get(name, 0) + n

        return HelperContext(
            vpn, self.wan_ip, self.nat.rng, self.config.timeouts, self.ids.__next__, bump,
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
