"""Soak (issue 12): mixed TCP, UDP, ICMP and VPN traffic through the running router, round after round; at the end
its memory and its session table are where they were after the first round.

`make test` runs it for SOAK_SECONDS (default 60); `make soak` runs it for half an hour (`SOAK_SECONDS=1800`).
Short timeouts (10 s) let the plain flows of a round expire within the next rounds, so a table that only grows
shows up even in a minute.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from router.lab.topology import Lab
from router.lab.vpns import VpnLab
from tests.integration.conftest import Peers, ctl, lab_for, three_vpns, vpn_flows, wait_for
from tests.integration.peers import payload

S1 = "198.51.100.10"
SECONDS = float(os.environ.get("SOAK_SECONDS", "60"))
TIMEOUT = 10
DOWNLOAD = 2 * 1024 * 1024
RSS_GROWTH_MB = 8.0
"""Allowed growth of the router's memory from the end of the first round to the end (allocator slack)."""


@pytest.fixture(scope="module")
def soak_lab():
    timeouts = f"[timeouts]\nudp = {TIMEOUT}\nicmp = {TIMEOUT}\ntcp_transitory = {TIMEOUT}\n"
    with lab_for("vs", clients=2, servers=1, extra_config=timeouts) as lab:
        yield lab, three_vpns(lab)


def rss_mb(lab: Lab) -> float:
    text = Path(f"/proc/{lab.router_proc.pid}/status").read_text()
    return int(text.split("VmRSS:", 1)[1].split()[0]) / 1024


def one_round(lab: Lab, vpns: VpnLab, peers: Peers, n: int) -> None:
    """A download checked by its sha256, UDP both ways, pings, and a ping through the IPsec tunnel."""
    server = peers.start("vs-s1", "serve-tcp", 9000, DOWNLOAD, n, 1)
    echo = peers.start("vs-s1", "udp-echo", 7, 5)
    assert peers.run("vs-c1", "fetch-tcp", S1, 9000).split() == [str(DOWNLOAD),
                                                                hashlib.sha256(payload(DOWNLOAD, n)).hexdigest()]
    for _ in range(5):
        assert peers.run("vs-c2", "udp-ask", S1, 7) == "echo:hello:198.51.100.1"
    server.wait(30)
    echo.wait(30)
    assert " 0% packet loss" in lab.run_in("vs-c2", "ping", "-q", "-c", "5", "-i", "0.05", S1).stdout
    assert vpns.ping("c2", "ipsec", count=2).returncode == 0


def packets(lab: Lab) -> dict[int, int]:
    """VPN flows by id: their packets both ways."""
    return {i: f["packets_in"] + f["packets_out"] for i, f in vpn_flows(lab).items()}


def test_soak_leaves_memory_and_tables_flat(soak_lab):
    lab, vpns = soak_lab
    peers = Peers(lab)
    flows = packets(lab)
    assert len(flows) == 3
    one_round(lab, vpns, peers, 1)
    baseline = rss_mb(lab)
    rounds, end = 1, time.monotonic() + SECONDS
    while time.monotonic() < end:
        rounds += 1
        one_round(lab, vpns, peers, rounds)
    final = rss_mb(lab)
    # once the plain flows of the last rounds have expired, only the VPN's own sessions are left
    assert wait_for(lambda: json.loads(ctl(lab, "status", "--json"))["sessions"] <= 4, 3 * TIMEOUT + 10), \
        ctl(lab, "sessions")
    now = packets(lab)
    assert sorted(now) == sorted(flows) and all(now[i] > flows[i] for i in flows)   # the same tunnels, alive
    print(f"soak: {rounds} rounds in {SECONDS:.0f} s, router RSS {baseline:.1f} -> {final:.1f} MB")
    assert final - baseline <= RSS_GROWTH_MB, (baseline, final, rounds)
