"""The independent checksum oracle: scapy recomputes every checksum of a packet from scratch."""

from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, in4_pseudoheader
from scapy.layers.inet6 import IPv6, in6_chksum
from scapy.layers.l2 import Ether
from scapy.utils import checksum as scapy_checksum


def check_checksums(pkt: Ether, partial: bool = False, completed_by_linux: bool = False) -> None:
    """Assert every checksum in ``pkt`` equals an independent recomputation.

    ``completed_by_linux``: the packet was captured after Linux filled in a checksum the router left partial
    (``VNET_F_NEEDS_CSUM``). ``skb_checksum_help`` then writes a folded sum of 0 as 0xFFFF (``CSUM_MANGLED_0``),
    for TCP as for UDP; both are the same number in one's complement (RFC 1624 §3), and both verify."""
    if IPv6 in pkt and pkt[IPv6].nh == 58:
        ip6 = pkt[IPv6]
        message = bytes(ip6.payload)[:ip6.plen]
        expected = in6_chksum(58, ip6, message[:2] + b"\0\0" + message[4:])
        assert int.from_bytes(message[2:4], "big") == expected, "ICMPv6 checksum"
    if IP not in pkt:
        return
    ip = pkt[IP]
    header = bytes(ip)[:ip.ihl * 4]
    assert scapy_checksum(header[:10] + b"\0\0" + header[12:]) == ip.chksum, "IPv4 header checksum"
    payload = bytes(ip)[ip.ihl * 4:ip.len]
    if ip.frag or ip.flags.MF:
        return  # a fragment: the transport checksum covers the whole datagram
    if TCP in ip or UDP in ip:
        layer = ip[TCP] if TCP in ip else ip[UDP]
        if UDP in ip and layer.chksum == 0:
            return
        at = 16 if TCP in ip else 6
        zeroed = payload[:at] + b"\0\0" + payload[at + 2:]
        pseudo = in4_pseudoheader(ip.proto, ip, len(payload))
        if partial:
            expected = ~scapy_checksum(pseudo) & 0xFFFF
        else:
            expected = scapy_checksum(pseudo + zeroed)
            if UDP in ip and expected == 0:
                expected = 0xFFFF
        if completed_by_linux and expected == 0 and layer.chksum == 0xFFFF:
            expected = 0xFFFF
        assert layer.chksum == expected, f"{layer.name} checksum {layer.chksum:#06x} != {expected:#06x}"
    elif ICMP in ip:
        icmp = ip[ICMP]
        assert scapy_checksum(payload[:2] + b"\0\0" + payload[4:]) == icmp.chksum, "ICMP checksum"
        if IPerror in icmp:
            inner = bytes(icmp[IPerror])[:icmp[IPerror].ihl * 4]
            assert scapy_checksum(inner[:10] + b"\0\0" + inner[12:]) == icmp[IPerror].chksum, "inner IP checksum"
