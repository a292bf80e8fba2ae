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
from ..helpers.base import Helper
from ..packet import checksum
from ..packet.arp import ArpOp, arp_frame, gratuitous_arp
from ..packet.frame import ETH_OFFSET, EtherType, IP_DF, IP_MF, IP_OFFSET, IPV4, IpProto, ip_str, is_unicast
from ..packet.ipv4 import IcmpType, Unreachable, fragment
from .admission import Admission
from .arp import ArpTable, parse_arp
from .contract import LAN, PORT_NAMES, WAN
from .events import DropReason, EventQueue, LazyInfo, SessionClosed, SessionOpened
from .forward import Forwarding
from .fragments import FragmentTracker
from .icmp import echo_reply, error_datagram
from .nat import NatTable
from .natsession import Ids
from .passthrough import Passthrough
from .restart import Restart
from .views import ControlViews

FRAMES_IN = ("frames_in_lan", "frames_in_wan")
BYTES_IN = ("bytes_in_lan", "bytes_in_wan")
IP = IP_OFFSET
MIN_IP_FRAME = IP + 20


class Router(Forwarding, Passthrough, Restart, ControlViews):
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
        self.events = EventQueue()
        self.helpers: tuple[Helper, ...] = tuple(helpers)
        self.init_switches()
        self.admission = Admission(self.modes, config.rules, config.default_action)
        self.ip_handlers: dict[int, Helper] = {}
        self.bind_helpers()
        self.offload = None
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
            return self.icmp_error(LAN, frame, IcmpType.TIME_EXCEEDED, 0, now, DropReason.TTL_EXCEEDED)
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
            return self.icmp_error(WAN, frame, IcmpType.TIME_EXCEEDED, 0, now, DropReason.TTL_EXCEEDED)
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
            return self.icmp_error(LAN, frame, IcmpType.DEST_UNREACHABLE, Unreachable.PORT, now,
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
        self.icmp_error(1 - port, frame, IcmpType.DEST_UNREACHABLE, Unreachable.FRAG_NEEDED, now,
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
        if port == WAN and dst & self.wan_mask != self.wan_net:     # next_hop, inline: this runs per frame
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

    def next_hop(self, port: int, dst: int) -> int | None:
        """Where a datagram to ``dst`` goes on ``port``'s link: ``dst`` itself, or off the WAN's prefix its gateway
        (None without one)."""
        if port == WAN and dst & self.wan_mask != self.wan_net:
            return self.ports[WAN].gateway
        return dst

    def icmp_budget(self, now: float) -> bool:
        """Whether another ICMP error may go out this second (RFC 1812 §4.3.2.8, RFC 4443 §2.4 (f)); the ones held
        back are counted."""
        second = int(now)
        if second != self._icmp_second:
            self._icmp_second, self._icmp_sent = second, 0
        if self._icmp_sent >= self.config.limits.icmp_errors_per_second:
            self.counters["icmp_errors_rate_limited"] += 1
            return False
        return True

    def icmp_error(self, port: int, frame: bytearray, icmp_type: int, code: int, now: float,
                    reason: DropReason, rest: int = 0) -> None:
        """Drop ``frame`` (from ``port``) for ``reason`` and tell its sender, rate limited."""
        src = int.from_bytes(frame[IP + 12:IP + 16], "big")
        self.drop(port, reason, now, f"from {ip_str(src)}")
        if not self.icmp_budget(now):
            return
        datagram = error_datagram(self.addresses[port], frame, icmp_type, code, rest)
        if datagram is None:
            return
        self._icmp_sent += 1
        self.counters["icmp_errors_sent"] += 1
        out = bytearray(IP)  # virtio-net header and Ethernet header, filled in by send()
        out += datagram
        self.send(port, src, out, now)

