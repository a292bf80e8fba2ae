"""An IPv6 WAN that carries the router's IPv4 in a softwire: MAP-E (RFC 7597) and DS-Lite (RFC 6333).

Theory of operation
-------------------
The router's IPv4 core (``Router``: NAT, helpers, ICMP) runs unchanged; only
the WAN's link differs.  Its WAN port is IPv6: the router answers Neighbor
Discovery for its own addresses and resolves its gateway's (RFC 4861), and
every IPv4 datagram the core sends out of the WAN is put behind a 40-byte
IPv6 header to the tunnel peer (RFC 2473 §5) in ``send``; IPv4-in-IPv6 from
that peer to the router's tunnel address is stripped of its IPv6 header in
place and handed to the core's IPv4 input as if it had come from the WAN.
IPv4-in-IPv6 from anyone else is dropped and counted (``softwire_foreign``).

The core sees a WAN MTU 40 bytes below the link's (``[wan] mtu``): it
fragments what may be fragmented and answers DF datagrams that do not fit
with ICMP "fragmentation needed", as RFC 7597 §8.3.1 and RFC 2473 §7.1 ask of
the tunnel entry point, so nothing vanishes in a black hole.  An ICMPv6
Packet Too Big about our own softwire packets lowers that MTU (RFC 8201 §4).

``MapERouter`` (RFC 7597 §8): the core's NAT translates into the CE's
shared IPv4 address and port set (``[wan.map_e]``, ``router.mape``);
datagrams go to the BR only (hub and spoke).  GRE and raw ESP have no port,
so the port set refuses them with a reason, as ``[nat.port_set]`` does.

``B4Router`` (RFC 6333 §5): no NAT44 at all; the LAN's IPv4 goes into the
softwire as it is, and the AFTR translates it.  The passthrough switches
have nothing to act on, which ``status()["wan"]`` says.

The TAPs of an IPv6 WAN run without offloads (no super-frames, no partial
checksums): the kernel would not know to segment through our IPv6 header.
"""

from __future__ import annotations

import random

from ..config import Config
from ..config_wan import WanLink
from ..helpers.base import Helper
from ..packet import ipv6
from ..packet.frame import ETH_OFFSET, IP_OFFSET, VNET_F_NEEDS_CSUM, VNET_HDR, IpProto, ip_str
from ..packet.ipv4 import IcmpType, fragment
from .contract import LAN, WAN
from .events import DropReason
from .native6 import NativeIpv6
from .ndp import Neighbours
from .reassembly6 import Reassembly
from .router import Router

IP = IP_OFFSET
TUNNEL_HOP_LIMIT = 64
"""RFC 2473 §6.3: the tunnel's default hop limit."""

DROP_REASONS = (
    "not_ipv6",              # IPv4, ARP or anything but IPv6 on the IPv6 WAN
    "bad_ipv6_header",       # a version, payload length or extension-header chain that lies
    "softwire_foreign",      # IPv4-in-IPv6 from anyone but the BR or AFTR, or to another address
    "ipv6_fragment",         # an IPv6 packet in fragments that reassembly gave up (reassembly6.py says why)
    "bad_nd",                # Neighbor Discovery that RFC 4861 §7.1 says to discard
    "nd_unresolved",         # queued for a gateway that answered no solicitation
)
COUNTERS = ("softwire_in", "softwire_out", "nd_solicitations_sent", "nd_advertisements_sent",
            "echo6_replies_sent", "packet_too_big_received", "ipv6_reassembled")


class SoftwireRouter(NativeIpv6, Router):
    """The router on an IPv6 WAN: ND, encapsulation and decapsulation around the IPv4 core."""

    def __init__(self, config: Config, helpers: tuple[Helper, ...] = (), rng: random.Random | None = None):
        super().__init__(config, helpers, rng)
        link: WanLink = config.wan_link
        self.link = link
        self.link6, self.source6, self.peer6 = link.address6.ip.packed, link.source.packed, link.peer.packed
        self.gateway6 = link.gateway6.packed
        self.tunnel_header = ipv6.HEADER.pack(6 << 28, 0, ipv6.IPIP, TUNNEL_HOP_LIMIT, self.source6, self.peer6)
        """The softwire's IPv6 header; ``_encapsulate`` fills in the traffic class and the payload length."""
        self.own6 = frozenset({self.link6, self.source6})
        self.groups = frozenset({ipv6.solicited_node(a) for a in self.own6} | {ipv6.ALL_NODES})
        self.wan_nd = Neighbours(self.macs[WAN], self.link6, self.counters, queue_limit=config.limits.arp_queue,
                                 max_entries=64)
        self.python_only = f"wan.mode = \"{link.mode}\": the fast path does not encapsulate"
        for name in COUNTERS:
            self.counters[name] = 0
        for reason in DROP_REASONS:
            self.counters["drop_" + reason] = 0
        self.reassembly = Reassembly()
        self.init_native6()

    # -- the sans-IO surface ------------------------------------------------------------------

    def start(self, now: float) -> None:
        super().start(now)
        self.outbox[WAN].clear()          # the core's gratuitous ARP: no ARP on an IPv6 link
        self.outbox[WAN].append(self.wan_nd.solicit(self.gateway6, now))
        if self.lan6 is not None:
            self._advertise(now)

    def receive_frame(self, port: int, frame: bytearray, now: float) -> None:
        if port == LAN:
            if frame[24:26] == b"\x86\xdd" and len(frame) >= IP:
                self.counters["frames_in_lan"] += 1
                self.counters["bytes_in_lan"] += len(frame)
                return self.lan_ipv6(frame, now)
            return super().receive_frame(port, frame, now)
        counters = self.counters
        counters["frames_in_wan"] += 1
        counters["bytes_in_wan"] += len(frame)
        if len(frame) < IP:
            return self.drop(WAN, DropReason.TRUNCATED, now)
        if frame[24] != 0x86 or frame[25] != 0xDD:
            return self.drop(WAN, "not_ipv6", now, f"ethertype 0x{frame[24]:02x}{frame[25]:02x} on an IPv6 WAN")
        if not frame.startswith(self.macs[WAN], ETH_OFFSET) and not frame.startswith(b"\x33\x33", ETH_OFFSET):
            counters["ignored_other_mac"] += 1
            return None
        return self._ipv6(frame, now)

    def handle_timer(self, now: float) -> None:
        super().handle_timer(now)
        for port, table in ((WAN, self.wan_nd), (LAN, self.lan_nd)):
            solicitations, dropped = table.tick(now)
            self.outbox[port].extend(solicitations)
            if dropped:
                self.drop(port, "nd_unresolved", now, f"{dropped} frames", count=dropped)
        self.firewall.expire(now)
        self.report_firewall(now)
        self.reassembly.expire(now)
        if self.reassembly.timed_out:
            self.drop(WAN, "ipv6_fragment", now, "reassembly timed out (RFC 8200 §4.5: 60 s)",
                      count=self.reassembly.timed_out)
            self.reassembly.timed_out = 0
        if self.lan6 is not None and now >= self.next_ra:
            self._advertise(now)

    def get_timer(self) -> float | None:
        deadlines = [d for d in (super().get_timer(), self.wan_nd.deadline(), self.lan_nd.deadline(),
                                 self.firewall.next_deadline(), self.reassembly.next_deadline(),
                                 self.next_ra if self.lan6 is not None else None)
                     if d is not None]
        return min(deadlines) if deadlines else None

    def wan_status(self) -> dict:
        status = self.link.status()
        mac = self.wan_nd.mac_of(self.gateway6)
        status["gateway6_mac"] = mac.hex(":") if mac else None
        status["ipv6_switches"] = dict(self.firewall.switches)
        status["ipv6_sessions"] = len(self.firewall)
        return status

    def set_ipv6_switch(self, name: str, on: bool, now: float) -> dict:
        """A VPN's IPv6 switch (``[wan] ipv6_<vpn>``): what it declares let in to LAN hosts unasked, or not; the
        records it let in end when it goes off.  ``LookupError`` for a switch there is not."""
        firewall = self.firewall
        if name not in firewall.switches:
            raise LookupError(f"no IPv6 switch {name!r} (known: {', '.join(firewall.switches) or 'none'})")
        firewall.set_switches(**{name: on})
        firewall.shut()
        self.report_firewall(now)
        return dict(firewall.switches)

    def session_refs(self) -> list:
        return super().session_refs() + list(self.firewall.flows.values())

    def find_session(self, session_id: int):
        found = super().find_session(session_id)
        return found if found is not None else next(
            (f for f in self.firewall.flows.values() if f.id == session_id), None)

    def close_session(self, session_id: int, now: float) -> bool:
        if self.firewall.close(session_id):
            self.report_firewall(now)
            return True
        return super().close_session(session_id, now)

    # -- IPv6 in -----------------------------------------------------------------------------

    def _ipv6(self, frame: bytearray, now: float) -> None:
        if frame[IP + 6] == ipv6.IPIP and frame[IP] >> 4 == 6 and frame.startswith(self.peer6, IP + 8) \
                and frame.startswith(self.source6, IP + 24):      # the common case: our softwire, no extension
            end = IP + ipv6.HEADER_LEN + (frame[IP + 4] << 8 | frame[IP + 5])
            if end <= len(frame):
                del frame[end:]
                return self._decapsulated(frame, ipv6.HEADER_LEN, now)
        try:
            end, proto, offset, src, dst, hop_limit = ipv6.parse(frame)
        except ipv6.Malformed as exc:
            return self.drop(WAN, "bad_ipv6_header", now, str(exc))
        if self.lan6_net is not None and dst[:8] == self.lan6_net:
            return self.forward6_in(frame, proto, offset, end, src, dst, hop_limit, now)
        if dst not in self.own6 and dst not in self.groups:
            return self.drop(WAN, DropReason.NOT_ROUTABLE, now, f"IPv6 to {ipv6.address_text(dst)}")
        if proto == ipv6.IPIP:
            return self._decapsulate(frame, offset, src, dst, now)
        if proto == ipv6.ICMPV6:
            return self._icmpv6(frame, offset, end, src, dst, hop_limit, now)
        if proto == ipv6.FRAGMENT:
            return self._fragment(frame, offset, end, src, dst, now)
        return self.drop(WAN, DropReason.UNSUPPORTED_PROTOCOL, now, f"IPv6 next header {proto} to the router")

    def _fragment(self, frame, offset, end, src, dst, now) -> None:
        """RFC 8200 §4.5, RFC 2473 §7: a piece of a packet for the router; once whole, it goes on as one."""
        whole = self.reassembly.add(frame, offset, end, src, dst, now)
        if isinstance(whole, str):
            return self.drop(WAN, "ipv6_fragment", now, f"from {ipv6.address_text(src)}: {whole}")
        if whole is not None:
            self.counters["ipv6_reassembled"] += 1
            return self._ipv6(whole, now)
        return None

    def _decapsulate(self, frame: bytearray, offset: int, src: bytes, dst: bytes, now: float) -> None:
        """RFC 2473 §4, RFC 7597 §8.1, RFC 6333 §6.5: the IPv4 inside, from our tunnel peer to our tunnel
        address only; it goes on as if it had come in on an IPv4 WAN."""
        if src != self.peer6 or dst != self.source6:
            return self.drop(WAN, "softwire_foreign", now,
                             f"IPv4-in-IPv6 {ipv6.address_text(src)} -> {ipv6.address_text(dst)}, not from "
                             f"{self.link.peer} to {self.link.source}")
        return self._decapsulated(frame, offset - IP, now)

    def _decapsulated(self, frame: bytearray, headers: int, now: float) -> None:
        """The IPv4 inside, in place of its ``headers`` bytes of IPv6, into the core's IPv4 input."""
        del frame[IP:IP + headers]
        frame[24] = 0x08
        frame[25] = 0x00
        self.counters["softwire_in"] += 1
        return self._ipv4(WAN, frame, now)

    def _icmpv6(self, frame, offset, end, src, dst, hop_limit, now) -> None:
        if end - offset < 8 or not ipv6.icmpv6_valid(frame, offset, end, src, dst):
            return self.drop(WAN, DropReason.BAD_ICMP_CHECKSUM, now, f"ICMPv6 from {ipv6.address_text(src)}")
        kind = frame[offset]
        if kind in (ipv6.NEIGHBOR_SOLICITATION, ipv6.NEIGHBOR_ADVERTISEMENT):
            return self.neighbor_discovery(WAN, frame, offset, end, src, dst, hop_limit, now)
        if kind == ipv6.ECHO_REQUEST and dst in self.own6:
            return self.echo_reply6(WAN, frame, offset, end, src, dst)
        if kind == ipv6.PACKET_TOO_BIG:
            return self._too_big(frame, offset, end, now)
        return None         # other ICMPv6 (router advertisements, replies): nothing for the router to do

    def neighbor_discovery(self, port, frame, offset, end, src, dst, hop_limit, now) -> None:
        """RFC 4861 §7.1 validity, then §7.2.3 (answer a solicitation for one of our addresses, learning its
        sender) or §7.2.5 (learn the neighbour we asked about from its advertisement)."""
        kind = frame[offset]
        target = bytes(frame[offset + 8:offset + 24])
        if hop_limit != ipv6.ND_HOP_LIMIT or frame[offset + 1] or end - offset < 24 or target[0] == 0xFF:
            return self.drop(port, "bad_nd", now, f"from {ipv6.address_text(src)}")
        option = ipv6.SOURCE_LINK_ADDRESS if kind == ipv6.NEIGHBOR_SOLICITATION else ipv6.TARGET_LINK_ADDRESS
        try:
            mac = ipv6.link_address_option(frame, offset + 24, end, option)
        except ipv6.Malformed as exc:
            return self.drop(port, "bad_nd", now, str(exc))
        table, own, groups = (self.wan_nd, self.own6, self.groups) if port == WAN else \
            (self.lan_nd, self.lan_own6, self.lan_groups)
        if kind == ipv6.NEIGHBOR_ADVERTISEMENT:
            if mac is not None:
                self.outbox[port].extend(table.learn(target, mac, now))
            return None
        if src == ipv6.UNSPECIFIED and (mac is not None or dst not in groups):
            return self.drop(port, "bad_nd", now, "a solicitation from :: with a link-layer address")
        if target not in own:
            return None
        if mac is not None and src != ipv6.UNSPECIFIED:
            self.outbox[port].extend(table.learn(src, mac, now))      # §7.2.3: a STALE entry, room permitting
        reply_mac = mac or bytes(frame[ETH_OFFSET + 6:ETH_OFFSET + 12])
        self.outbox[port].append(ipv6.neighbor_advertisement(self.macs[port], target, reply_mac, src,
                                                             router=port == LAN))
        self.counters["nd_advertisements_sent"] += 1
        return None

    def echo_reply6(self, port, frame, offset, end, src, dst) -> None:
        """RFC 4443 §4.2: the request's identifier, sequence number and data back to its sender."""
        message = bytearray(frame[offset:end])
        message[0], message[2:4] = ipv6.ECHO_REPLY, b"\0\0"
        to_mac = bytes(frame[ETH_OFFSET + 6:ETH_OFFSET + 12])
        self.outbox[port].append(ipv6.icmpv6(self.macs[port], to_mac, dst, src, bytes(message)))
        self.counters["echo6_replies_sent"] += 1

    def _too_big(self, frame, offset, end, now) -> None:
        """RFC 8201 §4 (and RFC 2473 §7.1): a Packet Too Big about one of our softwire packets lowers the
        IPv4 MTU of the softwire, never below what the IPv6 minimum MTU leaves (RFC 8200 §5)."""
        inner = offset + 8
        if end - inner < ipv6.HEADER_LEN or frame[inner + 6] != ipv6.IPIP \
                or frame[inner + 8:inner + 24] != self.source6:
            return None
        mtu = max(int.from_bytes(frame[offset + 4:offset + 8], "big"), 1280)
        self.counters["packet_too_big_received"] += 1
        inner_mtu = min(mtu, self.link.link_mtu) - ipv6.HEADER_LEN
        if inner_mtu < self.mtus[WAN]:
            self.mtus = (self.mtus[LAN], inner_mtu)
        return None

    # -- IPv6 out ----------------------------------------------------------------------------

    def send(self, port: int, dst: int, frame: bytearray, now: float) -> None:
        """Out of the WAN: fragment to the softwire's MTU if the datagram may be (RFC 7597 §8.3.1), put it
        behind the tunnel's IPv6 header (RFC 2473 §5, §6) and send it to the gateway."""
        if port == LAN:
            return super().send(port, dst, frame, now)
        if len(frame) - IP > self.mtus[WAN] and not frame[1]:
            pieces = fragment(frame, self.mtus[WAN])
            self.counters["fragments_made"] += len(pieces)
            for piece in pieces:
                self.send(WAN, dst, piece, now)
            return None
        self._encapsulate(frame)
        self.counters["softwire_out"] += 1
        if not self.wan_nd.send(self.gateway6, frame, now, self.outbox[WAN]):
            self.drop(WAN, DropReason.ARP_QUEUE_FULL, now, f"next hop {self.link.gateway6}")
        return None

    def _encapsulate(self, frame: bytearray) -> None:
        """The tunnel header in front of the IPv4 datagram, in place: traffic class from the IPv4 TOS (RFC 2473
        §5), flow label 0, next header 4, the tunnel's hop limit."""
        tos, length = frame[IP + 1], len(frame) - IP
        frame[IP:IP] = self.tunnel_header
        frame[IP] = 0x60 | tos >> 4
        frame[IP + 1] = (tos & 15) << 4
        frame[IP + 4] = length >> 8
        frame[IP + 5] = length & 0xFF
        frame[24] = 0x86
        frame[25] = 0xDD
        if frame[0] & VNET_F_NEEDS_CSUM:        # the checksum the kernel completes moved with the datagram
            flags, gso, hdr_len, gso_size, start, at, buffers = VNET_HDR.unpack_from(frame, 0)
            VNET_HDR.pack_into(frame, 0, flags, gso, hdr_len, gso_size, start + ipv6.HEADER_LEN, at, buffers)


class MapERouter(SoftwireRouter):
    """A MAP-E CE (RFC 7597): the core's NAPT into the CE's address and port set, in a softwire to the BR."""


class B4Router(SoftwireRouter):
    """A DS-Lite B4 (RFC 6333 §5): the LAN's IPv4 into the softwire untranslated; the AFTR does the NAT."""

    def forward_out(self, frame, ihl, tot_len, frag, proto, src, dst, now):
        if tot_len > self.mtus[WAN] and self.egress_too_big(WAN, frame, tot_len, frag, now):
            return None
        return self._route_plain(WAN, frame, tot_len, frag, dst, now)

    def forward_fragment(self, frame, ihl, tot_len, ident, frag, proto, src, dst, outbound, now):
        """A fragment from the LAN goes as it is (inbound ones never come here: ``_from_wan`` routes them)."""
        return self.forward_out(frame, ihl, tot_len, frag, proto, src, dst, now)

    def _from_wan(self, frame, ihl, tot_len, ident, frag, ttl, proto, src, dst, now) -> None:
        """What the AFTR sends back: to a LAN host (RFC 6333 §6.4), or to the B4 itself."""
        if dst == self.wan_ip:
            if proto == IpProto.ICMP and not frag & 0x1FFF and tot_len > ihl \
                    and frame[IP + ihl] == IcmpType.ECHO_REQUEST:
                return self._local(WAN, frame, ihl, frag, proto, src, dst, now)
            return self.drop(WAN, DropReason.UNSUPPORTED_PROTOCOL, now, f"protocol {proto} to the B4")
        if dst & self.lan_mask != self.lan_net or dst in (self.lan_ip, self.lan_bcast):
            return self.drop(WAN, DropReason.NOT_ROUTABLE, now, f"destination {ip_str(dst)}")
        if src & self.lan_mask == self.lan_net:
            return self.drop(WAN, DropReason.MARTIAN, now, f"source {ip_str(src)}")
        if ttl <= 1:
            return self.icmp_error(WAN, frame, IcmpType.TIME_EXCEEDED, 0, now, DropReason.TTL_EXCEEDED)
        return self._route_plain(LAN, frame, tot_len, frag, dst, now)


def softwire_router(config: Config, helpers: tuple[Helper, ...] = (), rng: random.Random | None = None) -> Router:
    """The router for ``[wan] mode = "map-e" | "ds-lite"``."""
    cls = MapERouter if config.wan_link.mode == "map-e" else B4Router
    return cls(config, helpers, rng=rng)

