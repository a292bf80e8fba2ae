"""A restart loses nothing (issue 12): a download, a PPTP call, an L2TP tunnel and an IPsec tunnel carry on
across SIGTERM and a new router process, and across SIGKILL from the last periodic state, with no new call or
tunnel negotiated."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from router.lab import ipsec
from router.lab.topology import Lab
from router.lab.vpns import VpnLab
from tests.integration.conftest import ROOT, Peers, ctl, lab_for, three_vpns, vpn_flows, wait_for
from tests.integration.peers import payload

S1 = "198.51.100.10"
DOWNLOAD = 6 * 1024 * 1024
RATE = 600 * 1024
"""The client reads at this many bytes a second: the download lasts ten seconds, across the restart."""


@pytest.fixture(scope="module")
def restart_lab():
    with lab_for("vk", clients=2, servers=1, router=False) as lab:
        lab.config_path.write_text(lab.router_config().replace("[state]\n", "[state]\ninterval = 1\n"))
        lab.start_router()
        yield lab, three_vpns(lab)


def carried_on(lab: Lab, vpns: VpnLab, before: dict[int, dict]) -> None:
    """The same call, tunnels and association, with traffic through each again, and nothing new negotiated."""
    after = vpn_flows(lab)
    assert sorted(after) == sorted(before)
    assert [f["call_state"] for f in after.values() if f["proto"] == "gre"] == ["established"]
    counts = {i: f["packets_in"] + f["packets_out"] for i, f in after.items()}
    assert wait_for(lambda: all(f["packets_in"] + f["packets_out"] > counts[i]
                                for i, f in vpn_flows(lab).items()), 20), vpn_flows(lab)
    assert vpns.ping("c2", "ipsec", count=3).returncode == 0


def gateway_pings_client(lab: Lab, vpns: VpnLab) -> subprocess.CompletedProcess:
    """s1's strongSwan gateway pings c2's virtual IP from its inner address, through c2's tunnel."""
    _, ns, _ = vpns.client("c2")
    client = ipsec.Charon(lab, ns, vpns.directory("c2", "ipsec"), "client", "vpn", proc=None)
    return lab.run_in(lab.server(1), "ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", "-I", ipsec.INNER,
                      client.virtual_ip(), check=False, timeout=30)


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
    # inbound first: the gateway pings its client through the tunnel before the client sends anything new; the
    # router knows no neighbour after a restart, so it holds the first frames while it asks for the client's MAC
    gateway_ping = gateway_pings_client(lab, vpns)
    assert gateway_ping.returncode == 0, gateway_ping.stdout + gateway_ping.stderr
    out, _ = fetch.communicate(timeout=120)
    server.wait(30)
    assert out.split() == [str(DOWNLOAD), hashlib.sha256(payload(DOWNLOAD, seed)).hexdigest()]
    carried_on(lab, vpns, flows)


# -- a lab torn down and built again, the router restarted on the same TAPs with its state ---------------------------

GATEWAY_ONLY_500 = """table inet gateway {
 chain input {
  type filter hook input priority 0;
  udp dport 500 udp sport != 500 drop
 }
}
"""
"""A gateway that accepts IKE only from port 500 (some do, and the firewalls before them): each client's IKE
must leave the router from outside port 500."""


def vpn_round(lab: Lab, base, tag: str, spi_base: int) -> dict:
    """At once: two strongSwan clients to s1 (IKE from port 500 only), raw ESP from both clients to s1 (SPIs
    from ``spi_base``), and a new TCP download from each client; what each got."""
    from tests.integration.test_ipsec_peers import EspPeer
    lab.run_in(lab.server(1), "nft", "-f", "-", input=GATEWAY_ONLY_500)
    charons = [ipsec.start_gateway(lab, lab.server(1), base / f"gw-{tag}", address=S1)]
    esp = []
    try:
        clients = [ipsec.start_client(lab, lab.client(i), base / f"c{i}-{tag}", gateway=S1,
                                      identity=f"client{i}-{tag}@lab") for i in (1, 2)]
        charons += clients
        out_spis = {i: spi_base + i for i in (1, 2)}
        in_spis = {i: spi_base + 0x100 + i for i in (1, 2)}
        esp.append(EspPeer(lab, lab.server(1), "responder", *(f"{out_spis[i]:08x}:{in_spis[i]:08x}" for i in (1, 2))))
        esp += [EspPeer(lab, lab.client(i), "client", S1, f"{out_spis[i]:08x}") for i in (1, 2)]
        peers = Peers(lab)
        server = peers.start(lab.server(1), "serve-tcp", 9100, 200_000, spi_base & 0xFFFF, 2)
        with ThreadPoolExecutor(4) as pool:
            tunnels = pool.map(ipsec.connect, clients)
            for i in (1, 2):        # pairs one after another: a client's first reply is the unknown SPI paired with it
                esp[i].ask("send 1")
                assert wait_for(lambda: esp[i].count() >= 1, 10), (tag, i)
            for i in (1, 2):
                esp[i].ask("send 2")
            downloads = [pool.submit(peers.run, lab.client(i), "fetch-tcp", S1, 9100) for i in (1, 2)]
            result = {"tunnels": list(tunnels), "downloads": [d.result() for d in downloads]}
        server.wait(30)
        result["pings"] = [ipsec.ping(lab, c, count=3).returncode for c in clients]
        wait_for(lambda: all(p.count() >= 3 for p in esp[1:]), 15)
        result["esp"] = [p.report()["received"] for p in esp[1:]]
        result["in_spis"] = [f"{in_spis[i]:08x}" for i in (1, 2)]
        return result
    finally:
        for peer in esp:
            peer.close()
        for charon in charons:
            charon.stop()


def test_a_router_restarted_for_a_rebuilt_lab_takes_up_its_tables_and_blocks_no_new_flow(tmp_path):
    with lab_for("vn", clients=2, servers=1) as lab:
        before = vpn_round(lab, tmp_path, "old", 0xA1000000)
        assert before["pings"] == [0, 0], before
        assert lab.stop_router(timeout=10) == 0
        lab.rebuild_hosts()                                 # new namespaces, new MACs, the same addresses
        lab.start_router()
        status = json.loads(ctl(lab, "status", "--json"))
        restored = status["state"]["restored"]
        print("restored:", restored["counts"], restored["dropped"])
        assert restored["counts"]["session"] >= 6 and restored["counts"]["ipsec association"] == 2, restored
        assert status["python"]["base_prefix"] == "/usr", status["python"]      # Debian's own Python runs it
        line = next(l for l in ctl(lab, "status").splitlines() if l.startswith("state "))
        assert f"{lab.state_dir / 'router.state'}: written" in line and "restored" in line, line
        after = vpn_round(lab, tmp_path, "new", 0xB2000000)
    size_and_digest = [str(200_000), hashlib.sha256(payload(200_000, 0xB2000000 & 0xFFFF)).hexdigest()]
    assert [d.split() for d in after["downloads"]] == [size_and_digest] * 2, after
    assert after["pings"] == [0, 0], after                 # both tunnels up at once, IKE from port 500 each
    assert all(t["nat-local"] == "yes" for t in after["tunnels"]), after
    assert after["esp"] == [{spi: 3} for spi in after["in_spis"]], after       # each client's replies, only its
    assert not (lab.state_dir / "router.state").exists()    # `lab down` took the lab's state file with it
