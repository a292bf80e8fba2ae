"""A restart loses nothing (issue 12): a download, a PPTP call, an L2TP tunnel and an IPsec tunnel carry on
across SIGTERM and a new router process, and across SIGKILL from the last periodic state, with no new call or
tunnel negotiated."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time

import pytest

from router.lab.topology import Lab
from router.lab.vpns import VpnLab
from tests.integration.conftest import ROOT, Peers, require_root, three_vpns, vpn_flows, wait_for
from tests.integration.peers import payload

S1 = "198.51.100.10"
DOWNLOAD = 6 * 1024 * 1024
RATE = 600 * 1024
"""The client reads at this many bytes a second: the download lasts ten seconds, across the restart."""


@pytest.fixture(scope="module")
def restart_lab():
    require_root()
    lab = Lab(prefix="vk", clients=2, servers=1)
    try:
        lab.up()
        lab.config_path.write_text(lab.router_config().replace("[state]\n", "[state]\ninterval = 1\n"))
        lab.start_router()
        yield lab, three_vpns(lab)
    finally:
        lab.down()


def carried_on(lab: Lab, vpns: VpnLab, before: dict[int, dict]) -> None:
    """The same call, tunnels and association, with traffic through each again, and nothing new negotiated."""
    after = vpn_flows(lab)
    assert sorted(after) == sorted(before)
    assert [f["call_state"] for f in after.values() if f["proto"] == "gre"] == ["established"]
    counts = {i: f["packets_in"] + f["packets_out"] for i, f in after.items()}
    assert wait_for(lambda: all(f["packets_in"] + f["packets_out"] > counts[i]
                                for i, f in vpn_flows(lab).items()), 20), vpn_flows(lab)
    assert vpns.ping("c2", "ipsec", count=3).returncode == 0


def restarted(lab: Lab, how: signal.Signals) -> str:
    """Stop the router with ``how`` and start a new one on the same configuration; the new one's log."""
    if how is signal.SIGTERM:
        assert lab.stop_router(timeout=10) == 0
    else:
        os.kill(lab.router_proc.pid, signal.SIGKILL)
        lab.router_proc.wait(10)
        lab.router_proc = None
    lab.start_router()
    log = lab.state_dir / "router.log"
    assert wait_for(lambda: "restored" in log.read_text(), 10), log.read_text()
    return log.read_text()


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_restart_loses_no_session(restart_lab, how):
    lab, vpns = restart_lab
    peers = Peers(lab)
    flows = vpn_flows(lab)
    assert sorted(f["proto"] for f in flows.values()) == ["esp", "gre", "l2tp"]
    seed = int(how)
    server = peers.start("vk-s1", "serve-tcp", 9000, DOWNLOAD, seed, 1)
    fetch = lab.popen_in("vk-c1", *peers.cmd("fetch-tcp", S1, 9000, RATE), cwd=ROOT, stdout=subprocess.PIPE,
                         text=True)
    time.sleep(2.5)          # a second of download, and (for SIGKILL) a periodic save that holds it
    log = restarted(lab, how)
    print(next(line for line in log.splitlines() if "restored" in line))
    out, _ = fetch.communicate(timeout=120)
    server.wait(30)
    assert out.split() == [str(DOWNLOAD), hashlib.sha256(payload(DOWNLOAD, seed)).hexdigest()]
    carried_on(lab, vpns, flows)
