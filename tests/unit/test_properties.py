"""Properties: checksums, parsing round trips, and no frame raising out of the data plane."""


from hypothesis import given, settings, strategies as st, HealthCheck
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.utils import checksum as scapy_checksum

from tests.unit.frames import C1, LAN, LAN_IP, S1, WAN, WAN_IP, from_lan, from_wan, make_router, wire
from router.packet import checksum


@given(st.binary(min_size=0, max_size=3000))
def test_ones_sum_matches_scapy(data):
    assert checksum.internet_checksum(data) == scapy_checksum(data)


@given(st.binary(min_size=20, max_size=64).filter(lambda b: len(b) % 2 == 0),
       st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF))
def test_incremental_update_equals_recomputation(data, old_value, new_value):
    """RFC 1624: patching 4 bytes and applying the delta gives the full recomputation."""
    before = bytearray(data)
    before[4:8] = old_value.to_bytes(4, "big")
    after = bytearray(before)
    after[4:8] = new_value.to_bytes(4, "big")
    updated = checksum.update(checksum.internet_checksum(before), checksum.delta(old_value, new_value, 4))
    full = checksum.internet_checksum(after)
    assert updated == full or {updated, full} == {0, 0xFFFF} and checksum.ones_sum(after) in (0, 0xFFFF)


def _mutations():
    base = [from_lan(C1, S1, UDP(sport=5, dport=53) / b"abcdef"), from_lan(C1, S1, TCP(flags="S")),
            from_lan(C1, S1, ICMP() / b"x"), from_lan(C1, S1, ICMP(type=3) / bytes(IP(src=S1, dst=C1) / UDP())),
            from_lan(C1, WAN_IP, ICMP() / b"x"), from_lan(C1, LAN_IP, UDP()), from_lan(C1, WAN_IP, b"", proto=1),
            from_wan(S1, ICMP() / b"x"), from_wan(S1, b"", proto=1), from_wan(S1, ICMP(type=0) / b"x"),
            from_lan(C1, S1, UDP(sport=5, dport=53) / bytes(100), flags="MF"),
            from_lan(C1, S1, UDP(sport=5, dport=53) / bytes(100), frag=10)]
    return st.sampled_from([bytes(wire(p)) for p in base])


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(_mutations(), st.lists(st.tuples(st.integers(0, 120), st.integers(0, 255)), max_size=6),
       st.integers(0, 120), st.sampled_from([LAN, WAN]))
def test_no_frame_raises_out_of_the_data_plane(frame, flips, cut, port):
    r = make_router()
    data = bytearray(frame)
    for at, value in flips:
        if at < len(data):
            data[at] = value
    data = data[:max(0, len(data) - cut)] if cut < 100 else data
    r.receive_frame(port, data, 1.0)
    r.handle_timer(1000.0)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=200), st.sampled_from([LAN, WAN]))
def test_random_bytes_never_raise(data, port):
    r = make_router()
    r.receive_frame(port, bytearray(data), 1.0)
    mac = r.macs[port]
    r.receive_frame(port, bytearray(12) + mac + bytes(6) + b"\x08\x00" + data, 1.0)   # random IPv4
    r.receive_frame(port, bytearray(12) + mac + bytes(6) + b"\x08\x00\x45" + data, 1.0)
