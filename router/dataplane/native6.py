"""Native IPv6 through the router on an IPv6 WAN: the LAN's prefix by SLAAC, forwarding without translation,
behind RFC 6092's stateful firewall.  A part of ``SoftwireRouter`` (``softwire.py``), which calls it with
IPv6 from the LAN (``lan_ipv6``) and with IPv6 from the WAN to the LAN's prefix (``forward6_in``).

The LAN's /64 is subnet 1 of the delegated prefix (``[wan] delegated_prefix``; MAP-E's End-user prefix by
default).  The router announces it in Router Advertisements (RFC 4861 §6.2: at start, every
``RA_INTERVAL`` seconds and when solicited) from its link-local address, answers Neighbor Discovery for
its LAN addresses (with the Router flag) and resolves the LAN hosts it forwards to.  IPv6 is forwarded, never
fragmented (RFC 8200 §5: a packet too big for the WAN link gets ICMPv6 Packet Too Big), its hop limit
decremented (RFC 4443 §3.3 Time Exceeded at 1), and filtered by ``firewall6.Firewall6``.
"""

from __future__ import annotations

from ..packet import ipv6
from ..packet.frame import ETH_OFFSET, IP_OFFSET, PORTS, U16
from .contract import LAN, WAN
from .events import DropReason, LazyInfo, SessionClosed, SessionOpened
from .firewall6 import TCP, UDP, Firewall6
from .ndp import Neighbours

IP = IP_OFFSET
RA_INTERVAL = 30.0
"""Seconds between unsolicited Router Advertisements (RFC 4861 §6.2.1 allows 4 to 1800)."""
DROP_REASONS = ("ipv6_off", "ipv6_unsolicited")
COUNTERS = ("ipv6_forwarded_out", "ipv6_forwarded_in", "router_advertisements_sent", "ipv6_admitted_unasked")


class NativeIpv6:
    """IPv6 between the LAN and the WAN link (for ``SoftwireRouter``)."""

    def init_native6(self) -> None:
        link, config = self.link, self.config
        self.lan6 = link.lan_prefix6
        self.lan_link_local = ipv6.link_local(self.macs[LAN])
        self.lan6_net = self.lan6.network_address.packed[:8] if self.lan6 is not None else None
        self.lan_global6 = (self.lan6.network_address + 1).packed if self.lan6 is not None else None
        self.lan_own6 = frozenset(a for a in (self.lan_link_local, self.lan_global6) if a is not None)
        self.lan_groups = frozenset({ipv6.solicited_node(a) for a in self.lan_own6} | {ipv6.ALL_NODES,
                                                                                        ipv6.ALL_ROUTERS})
        self.lan_nd = Neighbours(self.macs[LAN], self.lan_link_local, self.counters,
                                 queue_limit=config.limits.arp_queue, max_entries=config.limits.arp_pending * 16)
        admits = {f"ipv6_{h.name}": frozenset(h.ipv6_inbound) for h in self.helpers if h.ipv6_inbound}
        self.firewall = Firewall6(config.timeouts, self.ids, config.limits.sessions, admits, dict(link.ipv6_switches))
        self.next_ra = 0.0
        for name in COUNTERS:
            self.counters[name] = 0
        for reason in DROP_REASONS:
            self.counters["drop_" + reason] = 0

    # -- from the LAN -----------------------------------------------------------------------------

    def lan_ipv6(self, frame: bytearray, now: float) -> None:
        if not frame.startswith(self.macs[LAN], ETH_OFFSET) and not frame.startswith(b"\x33\x33", ETH_OFFSET):
            self.counters["ignored_other_mac"] += 1
            return None
        try:
            end, proto, offset, src, dst, hop_limit = ipv6.parse(frame)
        except ipv6.Malformed as exc:
            return self.drop(LAN, "bad_ipv6_header", now, str(exc))
        if dst in self.lan_own6 or dst[0] == 0xFF:
            if proto == ipv6.ICMPV6:
                return self._lan_icmpv6(frame, offset, end, src, dst, hop_limit, now)
            return None if dst[0] == 0xFF else self.drop(LAN, DropReason.UNSUPPORTED_PROTOCOL, now,
                                                         f"IPv6 next header {proto} to the router")
        if self.lan6 is None:
            return self.drop(LAN, "ipv6_off", now, "no delegated prefix: the router routes no IPv6")
        if src[:8] != self.lan6_net:
            return self.drop(LAN, DropReason.SPOOFED_SOURCE, now, f"IPv6 source {ipv6.address_text(src)}")
        if hop_limit <= 1:
            return self._icmpv6_error(LAN, frame, ipv6.TIME_EXCEEDED, 0, 0, now, DropReason.TTL_EXCEEDED)
        if dst[:8] == self.lan6_net:            # on-link, said the RA; forwarded back all the same
            frame[IP + 7] -= 1
            return self._send6(LAN, dst, frame, now)
        if end - IP > self.link.link_mtu:
            return self._icmpv6_error(LAN, frame, ipv6.PACKET_TOO_BIG, 0, self.link.link_mtu, now,
                                      DropReason.FRAG_NEEDED)
        ports = _ports(frame, proto, offset, end)
        if ports is None:
            return self.drop(LAN, DropReason.TRUNCATED, now, f"IPv6 next header {proto} from "
                                                              f"{ipv6.address_text(src)}")
        flow = self.firewall.outbound(proto, src, ports[0], dst, ports[1], ports[2], end - IP, now)
        if flow is None:
            return self.drop(LAN, DropReason.SESSION_LIMIT, now, f"IPv6 from {ipv6.address_text(src)}")
        self.report_firewall(now)
        frame[IP + 7] -= 1
        self.counters["ipv6_forwarded_out"] += 1
        if flow.tap is not None:
            flow.tap(frame)
        return self._send6(WAN, self.gateway6, frame, now)

    def _lan_icmpv6(self, frame, offset, end, src, dst, hop_limit, now) -> None:
        if end - offset < 8 or not ipv6.icmpv6_valid(frame, offset, end, src, dst):
            return self.drop(LAN, DropReason.BAD_ICMP_CHECKSUM, now, f"ICMPv6 from {ipv6.address_text(src)}")
        kind = frame[offset]
        if kind == ipv6.ROUTER_SOLICITATION and hop_limit == ipv6.ND_HOP_LIMIT and self.lan6 is not None:
            return self._advertise(now)
        if kind in (ipv6.NEIGHBOR_SOLICITATION, ipv6.NEIGHBOR_ADVERTISEMENT):
            return self.neighbor_discovery(LAN, frame, offset, end, src, dst, hop_limit, now)
        if kind == ipv6.ECHO_REQUEST and dst in self.lan_own6:
            return self.echo_reply6(LAN, frame, offset, end, src, dst)
        return None          # MLD reports, other hosts' ND: nothing for the router to do

    def _advertise(self, now: float) -> None:
        """A Router Advertisement to all nodes (RFC 4861 §6.2.4, §6.2.6)."""
        self.next_ra = now + RA_INTERVAL
        self.outbox[LAN].append(ipv6.router_advertisement(self.macs[LAN], self.lan_link_local,
                                                          self.lan6.network_address.packed, self.mtus[LAN]))
        self.counters["router_advertisements_sent"] += 1

    # -- from the WAN -----------------------------------------------------------------------------

    def forward6_in(self, frame, proto, offset, end, src, dst, hop_limit, now) -> None:
        """IPv6 from the WAN to a LAN host: only what a firewall record answers, or what a VPN's IPv6 switch
        lets in (RFC 6092 §3.2.4)."""
        if hop_limit <= 1:
            return self._icmpv6_error(WAN, frame, ipv6.TIME_EXCEEDED, 0, 0, now, DropReason.TTL_EXCEEDED)
        if proto == ipv6.FRAGMENT:
            if not self._fragment_answers(frame, offset, end, src, dst):
                return self.drop(WAN, "ipv6_unsolicited", now, f"IPv6 fragment from {ipv6.address_text(src)}")
        elif proto == ipv6.ICMPV6 and end - offset >= 8 and frame[offset] < 128:
            if not self._quotes_a_flow(frame, offset + 8, end):
                return self.drop(WAN, "ipv6_unsolicited", now, f"ICMPv6 error from {ipv6.address_text(src)}")
        else:
            ports = _ports(frame, proto, offset, end)
            if ports is None:
                return self.drop(WAN, DropReason.TRUNCATED, now, f"IPv6 from {ipv6.address_text(src)}")
            known = len(self.firewall)
            flow = self.firewall.inbound(proto, dst, ports[1], src, ports[0], ports[2], end - IP, now)
            if flow is None:
                return self.drop(WAN, "ipv6_unsolicited", now, f"IPv6 {proto} {ipv6.address_text(src)} -> "
                                                                 f"{ipv6.address_text(dst)}")
            if len(self.firewall) > known:
                self.counters["ipv6_admitted_unasked"] += 1
                self.report_firewall(now)
            if flow.tap is not None:
                flow.tap(frame)
        frame[IP + 7] -= 1
        self.counters["ipv6_forwarded_in"] += 1
        return self._send6(LAN, dst, frame, now)

    def _fragment_answers(self, frame, offset: int, end: int, src: bytes, dst: bytes) -> bool:
        """A fragment in to a LAN host, forwarded as it is (RFC 8200 §4.5: only its destination reassembles):
        the first, which carries the ports, must answer a record; a later one, a pair of addresses with one."""
        if end - offset < 8:
            return False
        if (frame[offset + 2] << 8 | frame[offset + 3]) & 0xFFF8:
            return self.firewall.paired(dst, src)
        proto = frame[offset]
        ports = _ports(frame, proto, offset + 8, end, quoted=True)
        return ports is not None and self.firewall.quoted(proto, dst, ports[1], src, ports[0])

    def _quotes_a_flow(self, frame, inner: int, end: int) -> bool:
        """Whether the packet an ICMPv6 error quotes is one of a flow we let out."""
        if end - inner < ipv6.HEADER_LEN + 4:
            return False
        proto, src, dst = frame[inner + 6], bytes(frame[inner + 8:inner + 24]), bytes(frame[inner + 24:inner + 40])
        ports = _ports(frame, proto, inner + ipv6.HEADER_LEN, end, quoted=True)
        return ports is not None and self.firewall.quoted(proto, src, ports[0], dst, ports[1])

    # -- sending, errors, events -------------------------------------------------------------------

    def _send6(self, port: int, address: bytes, frame: bytearray, now: float) -> None:
        table = self.lan_nd if port == LAN else self.wan_nd
        if not table.send(address, frame, now, self.outbox[port]):
            self.drop(port, DropReason.ARP_QUEUE_FULL, now, f"next hop {ipv6.address_text(address)}")

    def _icmpv6_error(self, port, frame, kind, code, value, now, reason) -> None:
        """Drop ``frame`` for ``reason`` and tell its source (RFC 4443 §2.4), within the router's ICMP rate."""
        self.drop(port, reason, now, f"IPv6 from {ipv6.address_text(bytes(frame[IP + 8:IP + 24]))}")
        if not self.icmp_budget(now):
            return
        self._icmp_sent += 1
        self.counters["icmp_errors_sent"] += 1
        source = self.lan_global6 if port == LAN else self.link6
        self.outbox[port].append(ipv6.icmpv6_error(self.macs[port], bytes(frame[ETH_OFFSET + 6:ETH_OFFSET + 12]),
                                                   source, frame, kind, code, value))

    def report_firewall(self, now: float) -> None:
        firewall = self.firewall
        while firewall.opened:
            self.counters["sessions_created"] += 1
            self.events.push(SessionOpened(now, LazyInfo(firewall.opened.pop(0), now, self.wan_ip)))
        while firewall.closed:
            flow, reason = firewall.closed.pop(0)
            self.counters["sessions_closed"] += 1
            self.events.push(SessionClosed(now, LazyInfo(flow, now, self.wan_ip), reason))


def _ports(frame: bytearray, proto: int, offset: int, end: int, quoted: bool = False) -> tuple | None:
    """(source port, destination port, TCP flags) of an IPv6 packet's upper layer: the ports of TCP and UDP, the
    Identifier of an ICMPv6 echo as the source's (a request's; a reply's destination), 0 for the rest.  None if
    the header is cut short (a quoted packet needs only its first 4 bytes: RFC 4443 §2.4 (c) quotes them)."""
    if proto == TCP or proto == UDP:
        need = 4 if quoted else (20 if proto == TCP else 8)
        if end - offset < need:
            return None
        sport, dport = PORTS.unpack_from(frame, offset)
        return sport, dport, frame[offset + 13] if proto == TCP and not quoted else 0
    if proto == ipv6.ICMPV6 and end - offset >= 8 and frame[offset] in (ipv6.ECHO_REQUEST, ipv6.ECHO_REPLY):
        ident = U16.unpack_from(frame, offset + 4)[0]
        return (ident, 0, 0) if frame[offset] == ipv6.ECHO_REQUEST else (0, ident, 0)
    return 0, 0, 0
