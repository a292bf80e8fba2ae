"""Installing entries: after the Python data plane forwarded an established flow's frame, the entry that repeats
its rewrite (``router/fastpath/__init__.py``).

The NAT paths (``dataplane/forward.py``) tell ``Offers`` of each frame they
forwarded, as the last thing they do, and only where a router has one: a
router without the fast path pays one attribute test on a forwarded frame.
An entry is installed only for a frame sent on whole at once (not
fragmented, not waiting for ARP) of an established flow whose helper, if it
has one, agrees.
"""

from __future__ import annotations

from ..dataplane.contract import LAN, WAN
from ..dataplane.tcpstate import TcpState
from ..helpers.offload import Offload
from ..packet.frame import IpProto
from . import _flowcache
from .entries import ADDRESS_AT, FLOW, ICMP_ID_AT, NO_PORT, OUTBOUND, PORT_AT, split_keys

TCP, UDP, ICMP = int(IpProto.TCP), int(IpProto.UDP), int(IpProto.ICMP)
ESTABLISHED = TcpState.ESTABLISHED
RESTORE_AT, RESTORE_SPLIT_ID = _flowcache.RESTORE_AT, _flowcache.RESTORE_SPLIT_ID
NOTHING = Offload()
"""A session without a helper: nothing to tell apart, restore or count but the NAT's own."""


class Offers:
    """What the NAT paths tell the fast path of the frames they forwarded."""

    def __init__(self, router, cache):
        self.router, self.cache = router, cache

    def session(self, session, outbound: bool, frame, l4: int) -> None:
        """An established session's frame just forwarded: a TCP session in ESTABLISHED, a UDP or ICMP query
        session's second datagram or later that way; its helper's yes if it has one."""
        proto = session.proto
        if proto == TCP:
            if session.state is not ESTABLISHED:
                self.cache.withdraw(session)      # FIN or RST: its frames are Python's from now on
                return
        elif (session.packets_out if outbound else session.packets_in) < 2:
            return          # UDP or an ICMP query: a lone datagram needs no entry, the second one each way gets it
        if session.tap is not None:
            return
        hop = self._sent(frame, WAN if outbound else LAN, session.remote_ip if outbound else session.inside_ip)
        if hop is None:
            return
        helper = session.helper
        offload = helper.offload(session, outbound, frame, l4) if helper is not None else None
        if helper is not None and offload is None:
            return
        if outbound:
            base = (LAN, proto, session.inside_ip, session.inside_port, session.remote_ip, session.remote_port)
            rewrite = (self.router.wan_ip, session.out_ip_delta, session.outside_port, session.out_l4_delta,
                       session.out_addr_delta)
        else:
            base = (WAN, proto, session.remote_ip, session.remote_port, self.router.wan_ip, session.outside_port)
            rewrite = (session.inside_ip, session.in_ip_delta, session.inside_port, session.in_l4_delta,
                       session.in_addr_delta)
        address, ip_delta, port, l4_delta, addr_delta = rewrite
        port_at = ICMP_ID_AT if proto == ICMP else PORT_AT[outbound]
        self._install(base, offload, hop, frame, outbound, address, ip_delta, proto, port_at, port, l4_delta,
                      addr_delta, session, 0)

    def flow(self, flow, proto: int, outbound: bool, frame, l4: int) -> None:
        """A helper's portless flow's datagram just forwarded (a call's GRE, raw ESP): its helper's yes."""
        if flow.tap is not None:
            return
        hop = self._sent(frame, WAN if outbound else LAN, flow.remote_ip if outbound else flow.inside_ip)
        if hop is None:
            return
        offload = self.router.helper_named[flow.vpn].offload_flow(flow, proto, outbound, frame, l4)
        if offload is None:
            return
        if outbound:
            base = (LAN, proto, flow.inside_ip, 0, flow.remote_ip, 0)
            address, ip_delta = self.router.wan_ip, flow.out_ip_delta
        else:
            base = (WAN, proto, flow.remote_ip, 0, self.router.wan_ip, 0)
            address, ip_delta = flow.inside_ip, flow.in_ip_delta
        self._install(base, offload, hop, frame, outbound, address, ip_delta, 0, NO_PORT, 0, 0, 0, flow, FLOW)

    def _install(self, base, offload, hop, frame, outbound, address, ip_delta, l4, port_at, port, l4_delta,
                 addr_delta, target, flags: int) -> None:
        """The entry (and the marker of a split 5-tuple), owned by ``target`` and what the helper named."""
        port_out, arp_expires = hop
        marker, key = split_keys(base, offload)
        offload = offload or NOTHING
        owners = (target, *offload.owners)
        if marker is not None:
            self.cache.marker(marker, offload.split, owners[:1])
        if offload.restore is None:
            restore = (0, 0, 0)
        else:
            restore = (RESTORE_SPLIT_ID if offload.split else RESTORE_AT, offload.restore_at, offload.restore)
        self.cache.install(key, port_out, bytes(frame[12:24]), ADDRESS_AT[outbound], address, ip_delta, l4, port_at,
                           port, l4_delta, addr_delta, *restore, offload.count_payload, arp_expires, target,
                           flags | (OUTBOUND if outbound else 0), offload.account, owners)

    def _sent(self, frame, port: int, dst: int) -> tuple[int, float] | None:
        """(port, how long ARP vouches for the next hop) if ``frame`` just went into the outbox of ``port``
        whole (not fragmented, not waiting for ARP); None otherwise."""
        outbox = self.router.outbox[port]
        if not outbox or outbox[-1] is not frame:
            return None
        neighbour = self.router.arp[port].cache.get(self.router.next_hop(port, dst))
        return None if neighbour is None else (port, neighbour.expires)
