"""The fast path repeats the Python data plane's decisions exactly (issue 19): differential tests.

Every test drives a pure-Python router and a fast-path router with the same
frames, timer calls and control requests (``differential.Twin``) and holds
them to byte-identical output frames, the same events, and the same session
views, counters, state records and timer.  Mixed traffic of every flow kind
comes from hypothesis, the real captures in tests/data/ and the fuzz corpus;
the scenarios below make sure the cases that matter are in every run: switch
and rule changes mid-stream, captures started mid-flow, an ARP change, and
expiry with traffic only on the fast path.  Each also checks that the fast
path did forward frames, so a silent fallback to Python cannot pass.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap

from router.behaviour import PROFILES
from router.fastpath import _flowcache
from router.helpers import registry
from router.helpers.offload import SPLIT_L2TP_TUNNEL, SPLIT_NATT_SPI
from tests.fuzz import program, targets
from tests.unit.differential import NEW_MACS, Twin, TwinFeed, played, setup
from tests.unit.frames import C1, C2, LAN, LAN_MAC, MACS, S1, S2, WAN, WAN_IP, WAN_MAC, wire

ROOT = Path(__file__).resolve().parents[2]
DATA = os.path.join(os.path.dirname(__file__), "..", "data")
EXAMPLES = int(os.environ.get("VPNROUTER_DIFFERENTIAL_EXAMPLES", "60"))


def hits(twin: Twin) -> int:
    return twin.fast.cache.stats()["hits"]


def test_the_flow_cache_splits_flows_as_the_helpers_mean():
    assert (_flowcache.SPLIT_NATT_SPI, _flowcache.SPLIT_L2TP_TUNNEL) == (SPLIT_NATT_SPI, SPLIT_L2TP_TUNNEL)


def test_every_flow_kind_in_bursts():
    """Each frame of the mix five times in a wake-up: the first through Python, the rest through the cache where
    it has an entry; the same frames out, the same counts in."""
    twin, pool = played()
    before = hits(twin)
    for frame in pool:
        twin.wake([frame] * 5)
    twin.check()
    stats = twin.fast.cache.stats()
    assert stats["hits"] - before >= 80, stats
    for reason in ("tcp_flags", "ttl", "fragment", "mtu", "ip_checksum", "payload"):
        assert stats["misses"][reason], f"no frame was left to Python for {reason}: {stats}"


def test_every_vpn_flow_kind_is_forwarded_by_the_cache():
    """GRE, raw ESP, NAT-T and L2TP data (told apart by SPI and Tunnel ID), UDP, TCP and ICMP queries: each has
    entries both ways."""
    twin, pool = played()
    kinds = set()
    for frame in pool:
        twin.wake([frame] * 3)
        kinds |= {(port, proto, dport if marker else None) for port, proto, _, _, _, dport, _, marker
                  in twin.fast.cache.keys()}
    assert {(port, proto, None) for port in (LAN, WAN) for proto in (1, 6, 17, 47, 50)} <= kinds, kinds
    assert {(LAN, 17, 1701), (WAN, 17, 1701), (LAN, 17, 4500), (WAN, 17, 4500)} <= kinds, kinds   # split by ID


def test_expiry_with_traffic_only_on_the_fast_path():
    """A UDP session kept alive by frames the cache forwards, past its idle timeout several times over: it lives
    as long in both; then silence, and it ends at the same moment in both."""
    twin, _ = played()
    out = (LAN, bytes(wire(Ether(src=MACS[C1], dst=LAN_MAC) / IP(src=C1, dst=S1) / UDP(sport=5000, dport=53)
                            / b"keepalive")))
    before = hits(twin)
    for _ in range(8):
        twin.wake([out] * 4)
        twin.timer(12.0)             # udp times out after 20 s idle
        twin.neighbours()            # ARP would have refreshed the next hops
        twin.check()
    assert hits(twin) - before >= 8 * 3
    assert any(s.inside_port == 5000 for s in twin.python.nat.out_sessions.values())
    for _ in range(6):
        twin.timer(5.0)
        twin.check()
    assert not any(s.inside_port == 5000 for s in twin.python.nat.out_sessions.values())


@pytest.mark.parametrize("vpn", registry.names())
def test_a_switch_turned_off_and_on_mid_stream(vpn):
    twin, pool = played()
    for value in ("off", "on", "single", "multi", False, True):
        for frame in pool:
            twin.wake([frame] * 2)
        twin.do("set_passthrough", vpn, value)
        twin.check()


def test_rules_and_profiles_changed_mid_stream():
    twin, pool = played()
    changes = [("add_rule", {"vpn": "any", "client": C1, "action": "deny"}, None), ("delete_rule", 1),
               *(("set_profile", name) for name in PROFILES), ("set_profile", "default")]
    for change in changes:
        for frame in pool:
            twin.wake([frame] * 2)
        twin.do(*change)
        twin.check()


def test_captures_started_mid_flow_see_every_frame():
    """A capture takes its session's or flow's frames from the cache: each one reaches the tap, in both."""
    twin, pool = played()
    for k in range(12):
        for frame in pool:
            twin.wake([frame] * 2)
        twin.capture(k)
    twin.check()
    assert len(twin.captured[0]) > 20


def test_a_neighbour_with_a_new_mac_gets_the_next_frame():
    """An ARP reply with another MAC: the cache's entries towards the old one go, the next frame goes to the
    new one, as Python sends it."""
    twin, pool = played()
    for frame in pool:
        twin.wake([frame] * 2)
    for host in (C1, C2):
        twin.arp(host, NEW_MACS[host])
        for frame in pool:
            twin.wake([frame] * 2)
        twin.check()


def test_sessions_and_flows_closed_by_request():
    """Each session and flow closed in turn, the mix sent again after each: a closed one's frames are Python's
    (a new session, or a drop), never the cache's."""
    twin, pool = played()
    for frame in pool:
        twin.wake([frame] * 2)
    for ref in list(twin.python.session_refs()):
        twin.do("close_session", ref.id)
        for frame in pool:
            twin.wake([frame] * 2)
            twin.check()


def test_a_neighbour_past_its_arp_lifetime():
    """Past ``arp_cache`` the next frame to a host is Python's, which asks ARP again as it sends it."""
    twin, pool = played()
    for frame in pool:
        twin.wake([frame] * 2)
    twin.timer(26.0)
    before = twin.fast.cache.stats()["misses"]["arp"]
    for frame in pool:
        twin.wake([frame] * 2)
    twin.check()
    assert twin.fast.cache.stats()["misses"]["arp"] > before


def test_a_nat_t_session_that_changes_its_spi_back_and_forth():
    twin, pool = played()
    spis = {spi: next(frame for frame in pool if frame[0] == LAN and frame[1][26 + 28:26 + 32] == spi)
            for spi in (bytes.fromhex("00001001"), bytes.fromhex("00001009"))}
    for spi in [*spis, *spis, *spis]:
        twin.wake([spis[spi]] * 3)
        twin.check()


def test_an_inbound_esp_spi_paired_by_what_the_cache_forwarded_last():
    """RFC 3715 §2.1 (f): a new inbound SPI goes to the client whose ESP left last, and that may have left by the
    cache a moment before, in the same wake-up: Python pairs it after the cache's counts are back."""
    twin, pool = played()
    c1, c2 = (next(f for f in pool if f[0] == LAN and f[1][26 + 9] == 50 and f[1][26 + 12:26 + 16] == _bytes(c))
              for c in (C1, C2))
    twin.wake([c1] * 3)
    new_spi = (WAN, bytes(wire(Ether(src=MACS[S2], dst=WAN_MAC) / IP(src=S2, dst=WAN_IP, proto=50)
                               / (bytes.fromhex("00002099") + bytes(40)))))
    twin.wake([c2, c2, c2, new_spi, new_spi], step=1.0)
    twin.check()
    (paired,) = [a for a in twin.fast.helper_named["ipsec"].flows() if 0x2099 in a.esp_in]
    assert paired.inside_ip == int.from_bytes(_bytes(C2), "big")


def _bytes(address: str) -> bytes:
    return bytes(int(x) for x in address.split("."))


def test_gso_super_frames_count_the_segments_they_stand_for():
    twin, pool = played()
    gso = [frame for frame in pool if frame[1][1]]      # gso_type set in the virtio-net header
    assert gso
    for frame in gso:
        twin.wake([frame] * 4)
    twin.check()
    sessions = [s for s in twin.fast.nat.out_sessions.values() if s.proto == 6]
    assert sessions and max(s.packets_out for s in sessions) > 4 * 2


# -- mixes -------------------------------------------------------------------------------------------------

OPS = st.one_of(
    st.tuples(st.just("wake"), st.lists(st.integers(0, 1 << 16), min_size=1, max_size=12)),
    st.tuples(st.just("burst"), st.integers(0, 1 << 16), st.integers(2, 30)),
    st.tuples(st.just("time"), st.sampled_from([0.5, 3.0, 11.0, 26.0, 61.0, 400.0])),
    st.tuples(st.just("switch"), st.sampled_from(registry.names()), st.sampled_from(["off", "on", "single"])),
    st.tuples(st.just("rule"), st.sampled_from([*registry.names(), "any"]), st.sampled_from([C1, C2])),
    st.tuples(st.just("unrule")),
    st.tuples(st.just("profile"), st.sampled_from(list(PROFILES))),
    st.tuples(st.just("capture"), st.integers(0, 40)),
    st.tuples(st.just("close"), st.integers(0, 40)),
    st.tuples(st.just("arp"), st.sampled_from([C1, C2])),
    st.tuples(st.just("flip"), st.integers(0, 1 << 16), st.integers(12, 90), st.integers(0, 255)),
)


def play(twin: Twin, pool, op) -> None:
    kind, *args = op
    if kind == "wake":
        twin.wake([pool[i % len(pool)] for i in args[0]])
    elif kind == "burst":
        twin.wake([pool[args[0] % len(pool)]] * args[1])
    elif kind == "time":
        twin.timer(args[0])
    elif kind == "switch":
        twin.do("set_passthrough", *args)
    elif kind == "rule":
        twin.do("add_rule", {"vpn": args[0], "client": args[1], "action": "deny"}, None)
    elif kind == "unrule":
        twin.do("delete_rule", 1)
    elif kind == "profile":
        twin.do("set_profile", args[0])
    elif kind == "capture":
        twin.capture(args[0])
    elif kind == "close":
        refs = twin.python.session_refs()
        if refs:
            twin.do("close_session", refs[args[0] % len(refs)].id)
    elif kind == "arp":
        host = args[0]
        known = twin.python.arp[LAN].cache.get(_int(host))
        twin.arp(host, NEW_MACS[host] if known is None or known.mac.hex(":") == MACS[host] else MACS[host])
    elif kind == "flip":
        port, frame = pool[args[0] % len(pool)]
        frame = bytearray(frame)
        frame[args[1] % len(frame)] = args[2]
        twin.wake([(port, bytes(frame))] * 2)


def _int(address: str) -> int:
    return int.from_bytes(bytes(int(x) for x in address.split(".")), "big")


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.data_too_large])
@given(ops=st.lists(OPS, max_size=25), seed=st.integers(1, 4))
def test_mixed_traffic_with_changes_mid_stream(ops, seed):
    twin, pool = played(seed)
    for op in ops:
        play(twin, pool, op)
    twin.check()
    twin.timer(4000.0)       # past every timeout: the same end
    twin.check()


# -- the real captures and the fuzz corpus ----------------------------------------------------------------

CAPTURE_CLIENT, CAPTURE_SERVER = "203.0.113.1", "203.0.113.10"
"""The capture's two ends (its NAT's outside and the server): replayed as C1 and S1, the ports kept."""


def replay(name: str) -> list[tuple[int, bytes]]:
    """A capture's IPv4 packets as frames to the router: the client's from C1 on the LAN, the server's from S1
    to the router's WAN address (the router keeps the client's ports, as the capture's one client had them)."""
    frames = []
    for packet in rdpcap(os.path.join(DATA, name)):
        if IP not in packet:
            continue
        ip = packet[IP].copy()
        del ip.chksum, ip.len
        for layer in (TCP, UDP):
            if layer in ip:
                del ip[layer].chksum
        if ip.src == CAPTURE_CLIENT:
            ip.src, ip.dst = C1, S1
            frames.append((LAN, bytes(wire(Ether(src=MACS[C1], dst=LAN_MAC) / ip))))
        else:
            ip.src, ip.dst = S1, WAN_IP
            frames.append((WAN, bytes(wire(Ether(src=MACS[S1], dst=WAN_MAC) / ip))))
    return frames


@pytest.mark.parametrize("name", ["pptp_fake_2cli.pcap", "pptp_realppp.pcap", "l2tp_fake_2cli.pcap",
                                  "natt_2cli.pcap", "ike_natt_1cli.pcap", "esp_masq_2cli.pcap"])
def test_the_real_captures(name):
    frames = replay(name)
    twin = Twin()
    for start in range(0, len(frames), 3):
        twin.wake(frames[start:start + 3])
    twin.check()
    twin.timer(4000.0)
    twin.check()


@pytest.mark.parametrize("target", [t for t in program.FRAME_TARGETS])
def test_the_fuzz_conversations_and_corpus(target):
    """Each target's conversation as the fuzzer starts from it, and every corpus input of it."""
    inputs = [b""] + [path.read_bytes() for name, path in targets.cases() if name == target]
    for data in inputs:
        program.run(target, data, feeder=TwinFeed)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.data_too_large])
@given(target=st.sampled_from(program.FRAME_TARGETS), data=st.binary(max_size=300))
def test_fuzz_programs(target, data):
    program.run(target, data, feeder=TwinFeed)


def test_setup_leaves_no_flow_kind_out():
    assert len(setup()) > 20


def test_without_the_extension_the_router_runs_in_python_and_says_why():
    """Where the flow cache was not built (no compiler when it was installed), the same router runs in Python."""
    code = ("import sys; sys.modules['router.fastpath._flowcache'] = None\n"
            "from router.fastpath import make_router\n"
            "from router.helpers.registry import build_helpers\n"
            "from tests.unit.frames import parse, config\n"
            "cfg = parse(config(dataplane={'fastpath': True}))\n"
            "r = make_router(cfg, build_helpers(cfg))\n"
            "print(type(r).__name__, '|', r.status(0.0)['dataplane'])\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    name, dataplane = result.stdout.strip().split(" | ")
    assert name == "Router" and "'path': 'python'" in dataplane and "the fast path is not built" in dataplane


def test_fastpath_false_runs_python():
    twin = Twin()
    assert twin.python.status(0.0)["dataplane"] == {"path": "python", "why": "[dataplane] fastpath = false"}
    assert twin.fast.status(0.0)["dataplane"]["path"] == "fast"
