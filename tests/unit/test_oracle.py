"""The checksum oracle itself: it refuses what is wrong, and takes Linux's 0xFFFF for a zero sum only when told."""

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from tests.oracle import check_checksums


def tcp_whose_checksum_is_zero() -> Ether:
    """A TCP segment whose correct checksum is 0x0000: with window 0 its checksum is ~S, so a window of ~S makes
    the sum 0xFFFF and the checksum 0."""
    def segment(window: int) -> Ether:
        return Ether(bytes(Ether() / IP(src="192.168.77.10", dst="198.51.100.20") / TCP(window=window)))
    packet = segment(segment(0)[TCP].chksum)
    assert packet[TCP].chksum == 0
    return packet


def test_minus_zero_is_accepted_only_for_a_checksum_linux_completed():
    packet = tcp_whose_checksum_is_zero()
    check_checksums(packet)
    packet[TCP].chksum = 0xFFFF
    with pytest.raises(AssertionError, match="TCP checksum 0xffff != 0x0000"):
        check_checksums(packet)
    check_checksums(packet, completed_by_linux=True)
    packet[TCP].chksum = 0x0001
    with pytest.raises(AssertionError):
        check_checksums(packet, completed_by_linux=True)
