"""The NAT's forwarding paths: LAN to WAN, WAN to LAN, hairpin, fragments, ICMP errors.

The common case, a packet of a known session, is a dictionary lookup and an
in-place rewrite of one address, one port and two checksums with deltas the
session precomputed (RFC 1624).  With a virtio-net NEEDS_CSUM frame the
transport checksum field holds the pseudo-header sum, so only the address
delta goes into it: the port lies inside the range the kernel sums later.

Protocols without ports (GRE, ESP) go to the helper that declared them: it
finds the flow, and the same one-address rewrite follows (``_portless_out``,
``_portless_in``).  Datagrams to a shared outside port (``nat.shared_in``)
that match several sessions go to the sessions' helper's ``demux``.

A new flow that no helper takes may still be a VPN that needs none: the
recognisers (``router.recognise``) name it by its remote port and first
payload bytes, once, when its session opens (``_open_out``).
"""

from __future__ import annotations

from functools import partial

from ..packet.checksum import TTL_DECREMENT, ones_sum, update, update_partial
from ..packet.frame import (IP_OFFSET, IpProto, PORTS, TCP_ACK, TCP_RST, TCP_SYN, U16, VNET_HDR,
                            VNET_F_NEEDS_CSUM, ip_str)
from ..packet.ipv4 import ERROR_TYPES, QUERY_REPLIES, QUERY_REQUESTS, IcmpType, Unreachable
from ..helpers.base import Verdict
from ..recognise import BY_PORT
from .contract import RouterCore
from .events import DropReason, VpnEvent
from .icmp import embedded_flow, rewrite_embedded, rewrite_outer
from .tcpstate import TcpState, next_state

IP = IP_OFFSET
LAN, WAN = 0, 1
TCP, UDP, ICMP = int(IpProto.TCP), int(IpProto.UDP), int(IpProto.ICMP)
MIN_L4 = tuple({TCP: 20, UDP: 8, ICMP: 8}.get(proto) for proto in range(256))
"""Smallest transport header per protocol with ports (or ICMP identifiers), by IP protocol number; None for the
portless (a tuple: indexing it is cheaper per frame than a dictionary's ``get``)."""
TTL_INCREMENT = (~TTL_DECREMENT) & 0xFFFF
ESTABLISHED = TcpState.ESTABLISHED
ENDED = frozenset({TcpState.FIN_BOTH, TcpState.TRANS})
"""TCP states after both FINs or a RST: the connection is over, though its session waits out its timeout."""
PROTO_NAMES = {int(IpProto.GRE): "GRE", int(IpProto.ESP): "ESP"}


def _flow(src: int, sport: int, dst: int, dport: int):
    """A drop's summary, made only if its event goes out (``EventQueue.drop``)."""
    return partial(_flow_text, src, sport, dst, dport)


def _flow_text(src: int, sport: int, dst: int, dport: int) -> str:
    return f"{ip_str(src)}:{sport} -> {ip_str(dst)}:{dport}"


class Forwarding(RouterCore):
    """A part of ``Router``: the NAT paths.  What it uses of the rest is declared in ``contract.RouterCore``."""

    recognisers: dict = BY_PORT
    """(IP protocol, remote port) -> the ``Recogniser`` that names a new flow without a helper (the registry's;
    an empty dict names none)."""

    # -- LAN to WAN ---------------------------------------------------------------------------

    def forward_out(self, frame, ihl, tot_len, frag, proto, src, dst, now):
        """Translate and forward a datagram from the LAN; return its session, or None if it went no further."""
        l4 = IP + ihl
        min_l4 = MIN_L4[proto]
        if min_l4 is None:
            return self._portless_out(frame, ihl, tot_len, frag, proto, src, dst, now)
        if tot_len < ihl + min_l4:
            return self.drop(LAN, DropReason.TRUNCATED, now, f"{proto} from {ip_str(src)}")
        if proto == ICMP:
            icmp_type = frame[l4]
            if icmp_type in ERROR_TYPES:
                return self._error_out(frame, l4, src, dst, now)
            if icmp_type not in QUERY_REQUESTS:
                return self.drop(LAN, DropReason.ICMP_UNSUPPORTED, now, f"ICMP type {icmp_type}")
            sport, dport = U16.unpack_from(frame, l4 + 4)[0], 0
        else:
            sport, dport = PORTS.unpack_from(frame, l4)
        if tot_len > self.mtus[WAN] and self.egress_too_big(WAN, frame, tot_len, frag, now):
            return None
        session = self.nat.out_sessions.get((proto, src, sport, dst, dport))
        if session is None:
            session = self._open_out(frame, l4, proto, src, sport, dst, dport, now)
            if session is None:
                return None
        helper = session.helper
        if helper is not None and helper.packet(session, frame, IP, l4, True, now) is Verdict.DROP:
            return self.drop(LAN, DropReason.HELPER, now, helper.name)
        if proto == TCP:
            flags = frame[l4 + 13]
            if flags & 7 or session.state is not ESTABLISHED:
                self._track_tcp(session, flags, True, now)
        # Rewrite the source in place (RFC 3022 §4.1) with the session's precomputed deltas.
        frame[IP + 12:IP + 16] = self.wan_ip_bytes
        frame[IP + 8] -= 1
        x = (~(frame[IP + 10] << 8 | frame[IP + 11]) & 0xFFFF) + session.out_ip_delta  # RFC 1624 eq. 3, inline
        x = (x & 0xFFFF) + (x >> 16)
        U16.pack_into(frame, IP + 10, ~((x & 0xFFFF) + (x >> 16)) & 0xFFFF)
        if proto == ICMP:
            U16.pack_into(frame, l4 + 4, session.outside_port)
            if not frame[0] & VNET_F_NEEDS_CSUM:
                U16.pack_into(frame, l4 + 2, update(frame[l4 + 2] << 8 | frame[l4 + 3], session.out_l4_delta))
        else:
            U16.pack_into(frame, l4, session.outside_port)
            at = l4 + 16 if proto == TCP else l4 + 6
            value = frame[at] << 8 | frame[at + 1]
            if frame[0] & VNET_F_NEEDS_CSUM:
                U16.pack_into(frame, at, update_partial(value, session.out_addr_delta))
            elif value or proto == TCP:
                x = (~value & 0xFFFF) + session.out_l4_delta
                x = (x & 0xFFFF) + (x >> 16)
                x = ~((x & 0xFFFF) + (x >> 16)) & 0xFFFF
                U16.pack_into(frame, at, x if x or proto == TCP else 0xFFFF)  # RFC 768: UDP sends 0 as 0xFFFF
        session.last_seen = now
        session.packets_out += _segments(frame, tot_len) if frame[1] else 1
        session.bytes_out += tot_len
        if session.tap is not None:
            session.tap(frame)
        if dst == self.wan_ip:
            return self._hairpin(frame, ihl, tot_len, frag, proto, dst, now)
        self.send(WAN, dst, frame, now)
        if self.offload is not None:        # the fast path: this rewrite, repeated for the next frames if it may
            self.offload.session(session, True, frame, l4)
        return session

    def _open_out(self, frame, l4, proto, src, sport, dst, dport, now):
        if proto == TCP and (frame[l4 + 13] & (TCP_SYN | TCP_RST | TCP_ACK)) != TCP_SYN:
            return self.drop(LAN, DropReason.TCP_NO_SESSION, now, _flow(src, sport, dst, dport))
        if dst == self.wan_ip and not self.nat.behaviour.hairpinning:
            return self.drop(LAN, DropReason.HAIRPIN_OFF, now, _flow(src, sport, dst, dport))
        helper = self._helper_for(proto, sport, dport)
        if helper is not None:
            if not self.switches[helper.name]:
                return self.drop(LAN, DropReason.PASSTHROUGH_OFF, now, _flow(src, sport, dst, dport))
            if not self.admit(helper.name, src, dst, now, LAN):
                return None
        share = helper is not None and helper.shares_port(proto, sport, dport)
        result = self.nat.open_outbound(proto, src, sport, dst, dport, now, share)
        if isinstance(result, DropReason):
            # RFC 5508, RFC 4787 §7: tell the host (a full table, or a port set with no port left)
            return self.icmp_error(LAN, frame, IcmpType.DEST_UNREACHABLE, Unreachable.ADMIN_PROHIBITED,
                                    now, result)
        if share and not result.mapping.shared:
            self._translated_under_port_set(helper, result, now)
        if helper is None:
            recogniser = self.recognisers.get((proto, dport))
            if recogniser is not None:
                result.recognised = recogniser.recognise(_payload(frame, l4, proto))
        return self._opened(result, helper, SYN_OUT, now)

    def _translated_under_port_set(self, helper, session, now):
        """A helper's preserved port (its well-known one) lies outside the port set: translated instead, told."""
        key = ("port_set_translated", helper.name, session.inside_ip)
        suppressed = self.events.allow(key, now)
        if suppressed is not None:
            self.events.push(VpnEvent(now, helper.name, "port_set_translated", (
                ("client", ip_str(session.inside_ip)), ("port", session.inside_port),
                ("outside_port", session.outside_port), ("suppressed", suppressed),
                ("summary", f"port {session.inside_port} is outside the port set: translated, as plain NAPT"))))

    def _helper_for(self, proto, inside_port, remote_port):
        """The helper that wants a new flow with these ports, if any (cold path: new flows only)."""
        for helper in self.helpers:
            if helper.attaches_to(proto, inside_port, remote_port):
                return helper
        return None

    def _opened(self, session, helper, tcp_state, now):
        if helper is not None:
            session.helper = helper
            self.hold(session, True)
            timeout = helper.timeout(session)
            if timeout is not None:
                session.timeout = timeout
                self.nat.schedule(session)
        if session.proto == TCP:
            self.nat.set_tcp_state(session, tcp_state, now)
        self.report_opened(session, now)
        return session

    def _track_tcp(self, session, flags, outbound, now):
        state = next_state(session.state, flags, outbound)
        if state is not session.state:
            self.nat.set_tcp_state(session, state, now)
            if session.helper is not None:     # a VPN's control connection that ended holds the VPN no more
                self.hold(session, state not in ENDED)

    def _hairpin(self, frame, ihl, tot_len, frag, proto, dst, now):
        """RFC 4787 REQ-9, RFC 5382 REQ-8: a LAN host reached through the WAN address.

        The packet has been translated as it leaves; now it arrives again,
        from the WAN address, and is translated as inbound.  The TTL was
        decremented once already.
        """
        frame[IP + 8] += 1
        U16.pack_into(frame, IP + 10, update(frame[IP + 10] << 8 | frame[IP + 11], TTL_INCREMENT))
        return self.forward_in(frame, ihl, tot_len, frag, proto, self.wan_ip, dst, now, hairpin=True)

    # -- WAN to LAN ------------------------------------------------------------------------------

    def forward_in(self, frame, ihl, tot_len, frag, proto, src, dst, now, hairpin=False):
        """Translate and forward a datagram to the WAN address; return its session or None."""
        l4 = IP + ihl
        port = LAN if hairpin else WAN
        min_l4 = MIN_L4[proto]
        if min_l4 is None:
            if hairpin:
                return self.drop(port, DropReason.UNSUPPORTED_PROTOCOL, now, f"hairpinned protocol {proto}")
            return self._portless_in(frame, ihl, tot_len, frag, proto, src, now)
        if tot_len < ihl + min_l4:
            return self.drop(port, DropReason.TRUNCATED, now, f"{proto} from {ip_str(src)}")
        if proto == ICMP:
            icmp_type = frame[l4]
            if icmp_type in ERROR_TYPES:
                return self._error_in(frame, l4, src, now)
            if icmp_type not in QUERY_REPLIES:
                return self.drop(port, DropReason.ICMP_UNSUPPORTED, now, f"ICMP type {icmp_type}")
            sport, dport = 0, U16.unpack_from(frame, l4 + 4)[0]
        else:
            sport, dport = PORTS.unpack_from(frame, l4)
        session = self.nat.in_sessions.get((proto, src, sport, dst, dport))
        if session is None:
            shared = self.nat.shared_in.get((proto, src, sport, dst, dport))
            if shared is not None:
                session = self._demux(shared, frame, l4, port, src, sport, dport, now)
            else:
                session = self._open_in(frame, l4, proto, src, sport, dport, port, now)
            if session is None:
                return None
        if tot_len > self.mtus[LAN] and self.egress_too_big(LAN, frame, tot_len, frag, now):
            return None
        helper = session.helper
        if helper is not None and helper.packet(session, frame, IP, l4, False, now) is Verdict.DROP:
            return self.drop(port, DropReason.HELPER, now, helper.name)
        if proto == TCP:
            flags = frame[l4 + 13]
            if flags & 7 or session.state is not ESTABLISHED:
                self._track_tcp(session, flags, False, now)
        frame[IP + 16:IP + 20] = session.inside_ip_bytes
        frame[IP + 8] -= 1
        x = (~(frame[IP + 10] << 8 | frame[IP + 11]) & 0xFFFF) + session.in_ip_delta  # RFC 1624 eq. 3, inline
        x = (x & 0xFFFF) + (x >> 16)
        U16.pack_into(frame, IP + 10, ~((x & 0xFFFF) + (x >> 16)) & 0xFFFF)
        if proto == ICMP:
            U16.pack_into(frame, l4 + 4, session.inside_port)
            if not frame[0] & VNET_F_NEEDS_CSUM:
                U16.pack_into(frame, l4 + 2, update(frame[l4 + 2] << 8 | frame[l4 + 3], session.in_l4_delta))
        else:
            U16.pack_into(frame, l4 + 2, session.inside_port)
            at = l4 + 16 if proto == TCP else l4 + 6
            value = frame[at] << 8 | frame[at + 1]
            if frame[0] & VNET_F_NEEDS_CSUM:
                U16.pack_into(frame, at, update_partial(value, session.in_addr_delta))
            elif value or proto == TCP:
                x = (~value & 0xFFFF) + session.in_l4_delta
                x = (x & 0xFFFF) + (x >> 16)
                x = ~((x & 0xFFFF) + (x >> 16)) & 0xFFFF
                U16.pack_into(frame, at, x if x or proto == TCP else 0xFFFF)  # RFC 768: UDP sends 0 as 0xFFFF
        session.last_seen = now
        session.packets_in += _segments(frame, tot_len) if frame[1] else 1
        session.bytes_in += tot_len
        if session.tap is not None:
            session.tap(frame)
        self.send(LAN, session.inside_ip, frame, now)
        if self.offload is not None and not hairpin:
            self.offload.session(session, False, frame, l4)
        return session

    def _demux(self, sessions, frame, l4, port, src, sport, dport, now):
        """A datagram to a shared outside port: the one session, or the one its helper picks."""
        if len(sessions) == 1:
            return sessions[0]
        helper = sessions[0].helper
        session = helper.demux(sessions, frame, IP, l4, now) if helper is not None else None
        if session is None:
            return self.drop(port, DropReason.SHARED_PORT_UNMATCHED, now, _flow(src, sport, self.wan_ip, dport))
        return session

    def _open_in(self, frame, l4, proto, src, sport, dport, port, now):
        """Unsolicited inbound traffic is dropped silently (RFC 4787 REQ-8, RFC 5382 REQ-4)."""
        if proto == TCP and (frame[l4 + 13] & (TCP_SYN | TCP_RST | TCP_ACK)) != TCP_SYN:
            return self.drop(port, DropReason.UNSOLICITED, now, _flow(src, sport, self.wan_ip, dport))
        if (proto, dport) in self.nat.shared_ports:
            return self._open_shared_in(frame, l4, proto, src, sport, dport, port, now)
        mapping = self.nat.by_outside.get((proto, dport))
        helper = None if mapping is None else self._helper_for(proto, mapping.inside_port, sport)
        if helper is not None:
            if not self.switches[helper.name]:
                return self.drop(port, DropReason.PASSTHROUGH_OFF, now, _flow(src, sport, self.wan_ip, dport))
            if helper.filters_by_address and not mapping.static and not mapping.has_remote(src):
                return self.drop(port, DropReason.UNSOLICITED, now, _flow(src, sport, self.wan_ip, dport))
            if not self.admit(helper.name, mapping.inside_ip, src, now, port):
                return None
        session = None if proto == ICMP else self.nat.open_inbound(proto, src, sport, dport, now)
        if session is None:
            return self.drop(port, DropReason.UNSOLICITED, now, _flow(src, sport, self.wan_ip, dport))
        return self._opened(session, helper, SYN_IN, now)

    def _open_shared_in(self, frame, l4, proto, src, sport, dport, port, now):
        """A known remote host answering a shared port from a new port (RFC 2661 §8.1): its helper picks the host."""
        known = self.nat.shared_sessions(proto, src, dport)
        if not known:
            return self.drop(port, DropReason.UNSOLICITED, now, _flow(src, sport, self.wan_ip, dport))
        helper = known[0].helper
        if helper is not None and not self.switches[helper.name]:
            return self.drop(port, DropReason.PASSTHROUGH_OFF, now, _flow(src, sport, self.wan_ip, dport))
        if not self.nat.admits(known[0].mapping, src):     # address-and-port-dependent filtering: no new port
            return self.drop(port, DropReason.UNSOLICITED, now, _flow(src, sport, self.wan_ip, dport))
        chosen = self._demux(known, frame, l4, port, src, sport, dport, now)
        if chosen is None:
            return None
        session = self.nat.open_on(chosen.mapping, src, sport, now)
        if session is None:
            return self.drop(port, DropReason.SESSION_LIMIT, now, _flow(src, sport, self.wan_ip, dport))
        return self._opened(session, helper, SYN_IN, now)

    # -- ICMP errors about NATed flows (RFC 5508 §4.2) -------------------------------------------------

    def _error_in(self, frame, l4, src, now):
        flow = embedded_flow(frame, l4)
        if flow is None:
            return self.drop(WAN, DropReason.ICMP_UNSUPPORTED, now, f"error from {ip_str(src)}")
        if ones_sum(frame, l4) != 0xFFFF:
            return self.drop(WAN, DropReason.BAD_ICMP_CHECKSUM, now, f"error from {ip_str(src)}")
        proto, isrc, isport, idst, idport, inner, inner_l4 = flow
        session = self.nat.in_sessions.get((proto, idst, idport, isrc, isport))
        if session is None:
            return self.drop(WAN, DropReason.ICMP_ERROR_NO_SESSION, now, f"about {_flow(isrc, isport, idst, idport)}")
        rewrite_embedded(frame, inner, inner_l4, 12, session.inside_ip, 4 if proto == ICMP else 0,
                         session.inside_port)
        rewrite_outer(frame, 16, session.inside_ip, l4)
        self.send(LAN, session.inside_ip, frame, now)
        return None

    def _error_out(self, frame, l4, src, dst, now):
        flow = embedded_flow(frame, l4)
        if flow is None:
            return self.drop(LAN, DropReason.ICMP_UNSUPPORTED, now, f"error from {ip_str(src)}")
        if ones_sum(frame, l4) != 0xFFFF:
            return self.drop(LAN, DropReason.BAD_ICMP_CHECKSUM, now, f"error from {ip_str(src)}")
        proto, isrc, isport, idst, idport, inner, inner_l4 = flow
        session = self.nat.out_sessions.get((proto, idst, idport, isrc, isport))
        if session is None:
            return self.drop(LAN, DropReason.ICMP_ERROR_NO_SESSION, now, f"about {_flow(isrc, isport, idst, idport)}")
        rewrite_embedded(frame, inner, inner_l4, 16, self.wan_ip, 4 if proto == ICMP else 2,
                         session.outside_port)
        rewrite_outer(frame, 12, self.wan_ip, l4)
        self.send(WAN, dst, frame, now)
        return None

    # -- protocols without ports: GRE, ESP (their helpers find the flow) ----------------------------

    def _portless_out(self, frame, ihl, tot_len, frag, proto, src, dst, now):
        """A GRE or ESP datagram from the LAN: its helper finds the flow; only the source address changes."""
        helper = self.ip_handlers.get(proto)
        if helper is None:
            return self.drop(LAN, DropReason.UNSUPPORTED_PROTOCOL, now, f"protocol {proto} from {ip_str(src)}")
        if not self.switches[helper.name]:
            return self.drop(LAN, DropReason.PASSTHROUGH_OFF, now, f"protocol {proto} from {ip_str(src)}")
        if self.nat.port_set is not None:
            return self._portless_under_port_set(LAN, proto, src, now)
        flow = helper.flow_out(proto, frame, IP + ihl, tot_len - ihl, src, dst, now)
        if flow is None:
            return None
        if tot_len > self.mtus[WAN] and self.egress_too_big(WAN, frame, tot_len, frag, now):
            return None
        frame[IP + 12:IP + 16] = self.wan_ip_bytes
        frame[IP + 8] -= 1
        U16.pack_into(frame, IP + 10, update(frame[IP + 10] << 8 | frame[IP + 11], flow.out_ip_delta))
        flow.last_seen = now
        flow.packets_out += 1
        flow.bytes_out += tot_len
        if flow.tap is not None:
            flow.tap(frame)
        self.send(WAN, dst, frame, now)
        if self.offload is not None:
            self.offload.flow(flow, proto, True, frame, IP + ihl)
        return flow

    def _portless_under_port_set(self, port, proto, src, now):
        """RFC 7597 §5.1: an address shared by port sets can carry only what has ports; a MAP-E CE drops the rest."""
        name = PROTO_NAMES.get(proto, f"protocol {proto}")
        return self.drop(port, DropReason.PORTLESS_UNDER_PORT_SET, now,
                         f"{name} from {ip_str(src)}: it has no port, and this address is shared by port sets")

    def _portless_in(self, frame, ihl, tot_len, frag, proto, src, now):
        """A GRE or ESP datagram from the WAN: its helper finds the flow (restoring any payload ID)."""
        helper = self.ip_handlers.get(proto)
        if helper is None:
            return self.drop(WAN, DropReason.UNSUPPORTED_PROTOCOL, now, f"protocol {proto} from {ip_str(src)}")
        if not self.switches[helper.name]:
            return self.drop(WAN, DropReason.PASSTHROUGH_OFF, now, f"protocol {proto} from {ip_str(src)}")
        if self.nat.port_set is not None:
            return self._portless_under_port_set(WAN, proto, src, now)
        flow = helper.flow_in(proto, frame, IP + ihl, tot_len - ihl, src, now)
        if flow is None:
            return None
        if tot_len > self.mtus[LAN] and self.egress_too_big(LAN, frame, tot_len, frag, now):
            return None
        frame[IP + 16:IP + 20] = flow.inside_ip_bytes
        frame[IP + 8] -= 1
        U16.pack_into(frame, IP + 10, update(frame[IP + 10] << 8 | frame[IP + 11], flow.in_ip_delta))
        flow.last_seen = now
        flow.packets_in += 1
        flow.bytes_in += tot_len
        if flow.tap is not None:
            flow.tap(frame)
        self.send(LAN, flow.inside_ip, frame, now)
        if self.offload is not None:
            self.offload.flow(flow, proto, False, frame, IP + ihl)
        return flow

    # -- fragments (RFC 4787 REQ-14) -------------------------------------------------------------

    def forward_fragment(self, frame, ihl, tot_len, ident, frag, proto, src, dst, outbound, now):
        key = (src, dst, proto, ident)
        port = LAN if outbound else WAN
        if not frag & 0x1FFF:
            forward = self.forward_out if outbound else self.forward_in
            session = forward(frame, ihl, tot_len, frag, proto, src, dst, now)
            if session is not None:
                for held in self.fragments.remember(key, session, now):
                    self._later_fragment(held, session, outbound, now)
            return None
        session = self.fragments.lookup(key, now)
        if session is not None:
            return self._later_fragment(frame, session, outbound, now)
        if not self.fragments.hold(key, frame, now):
            self.drop(port, DropReason.BAD_FRAGMENT, now, f"too many fragments from {ip_str(src)}")
        return None

    def _later_fragment(self, frame, session, outbound, now):
        """A non-first fragment: only its address changes; the transport header was in the first."""
        csum = frame[IP + 10] << 8 | frame[IP + 11]
        size = len(frame) - IP
        frame[IP + 8] -= 1
        session.last_seen = now
        if outbound:
            frame[IP + 12:IP + 16] = self.wan_ip_bytes
            U16.pack_into(frame, IP + 10, update(csum, session.out_ip_delta))
            session.packets_out += 1
            session.bytes_out += size
            dst = int.from_bytes(frame[IP + 16:IP + 20], "big")
            if dst == self.wan_ip:
                return self.drop(LAN, DropReason.BAD_FRAGMENT, now, "hairpinned fragment")
            return self.send(WAN, dst, frame, now)
        frame[IP + 16:IP + 20] = session.inside_ip_bytes
        U16.pack_into(frame, IP + 10, update(csum, session.in_ip_delta))
        session.packets_in += 1
        session.bytes_in += size
        return self.send(LAN, session.inside_ip, frame, now)


SYN_OUT, SYN_IN = TcpState.SYN_OUT, TcpState.SYN_IN


def _payload(frame: bytearray, l4: int, proto: int) -> bytes:
    """A new flow's first transport payload, up to the IP total length (cold path: what a recogniser reads)."""
    start = l4 + max(5, frame[l4 + 12] >> 4) * 4 if proto == TCP else l4 + 8
    return bytes(frame[start:IP + (frame[IP + 2] << 8 | frame[IP + 3])])


def _segments(frame: bytearray, tot_len: int) -> int:
    """How many wire packets a GSO super-frame stands for."""
    _, _, hdr_len, gso_size, _, _, _ = VNET_HDR.unpack_from(frame, 0)
    payload = tot_len + 14 - hdr_len
    return max(1, -(-payload // gso_size)) if gso_size else 1
