"""Attacks from the WAN through the running router (issue 12): they reach nobody and tear nothing down.

A client holds a PPTP call, an L2TP tunnel and an IPsec (NAT-T) tunnel to s1, and downloads from s1 slowly,
while s2, another WAN host, attacks the router's address (tests/integration/wan_attacks.py):
- unsolicited: GRE with every Call ID, L2TP with every Tunnel ID, raw ESP, NAT-T and IKE with the live SPIs
  (and guessed ones) from s2's own address, and a TCP SYN and a UDP datagram to every port: nothing of it
  reaches the client, nothing is created, and the router counts every one it saw;
- naming live sessions: forged port unreachables quoting the PPTP control connection and the download, and
  RSTs spoofed from s1 with guessed sequence numbers (RFC 5961 §3): the calls, tunnels and the download carry on.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time

import pytest

from router.lab.topology import STATE_DIR
from tests.integration.conftest import ROOT, cli_lab, is_vpn_flow, wait_for
from tests.integration.peers import payload

PREFIX = "vw"
SOCKET = STATE_DIR / PREFIX / "control.sock"
WAN, S1, S2 = "198.51.100.1", "198.51.100.10", "198.51.100.20"
DOWNLOAD = 6 * 1024 * 1024
RATE = 600 * 1024
"""The client reads the download at this many bytes a second, so that it lasts through the attacks."""
RSTS = 25


def vr(*args: str, timeout: float = 300) -> str:
    result = subprocess.run([sys.executable, "-m", "router", *args], capture_output=True, text=True,
                            timeout=timeout, cwd=ROOT)
    assert result.returncode == 0, f"vpnrouter {' '.join(args)}: {result.stdout}\n{result.stderr}"
    return result.stdout


def status() -> dict:
    return json.loads(vr("ctl", "--socket", str(SOCKET), "status", "--json"))


def sessions() -> list[dict]:
    return json.loads(vr("ctl", "--socket", str(SOCKET), "sessions", "--json"))


def in_ns(ns: str, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", f"{PREFIX}-{ns}", *args], cwd=ROOT, **kw)


def attack(*args: str) -> int:
    """Run one attack from s2; the number of packets it sent."""
    result = subprocess.run(["ip", "netns", "exec", f"{PREFIX}-s2", sys.executable, "-m",
                             "tests.integration.wan_attacks", WAN, *args], capture_output=True, text=True,
                            timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


def dropped(counters: dict) -> int:
    return sum(v for k, v in counters.items() if k.startswith("drop_"))


@pytest.fixture(scope="module")
def lab():
    with cli_lab(PREFIX, "--clients", "1", "--servers", "2"):
        for vpn in ("pptp", "l2tp", "ipsec"):
            vr("lab", "--prefix", PREFIX, "connect", "c1", vpn, "s1")
        yield


def vpn_flows() -> dict[int, dict]:
    return {s["id"]: s for s in sessions() if is_vpn_flow(s)}


def test_wan_attacks_reach_nobody_and_tear_nothing_down(lab):
    flows = vpn_flows()
    assert sorted(f["proto"] for f in flows.values()) == ["esp", "gre", "l2tp"]
    (esp,) = [f for f in flows.values() if f["proto"] == "esp"]
    (control,) = [s for s in sessions() if s["proto"] == "tcp" and s["remote"] == f"{S1}:1723"]
    server = in_ns("s1", sys.executable, "-m", "tests.integration.peers", "serve-tcp", "9000", str(DOWNLOAD), "7",
                   stdout=subprocess.PIPE, text=True)
    assert server.stdout.readline().strip() == "ready"
    fetch = in_ns("c1", sys.executable, "-m", "tests.integration.peers", "fetch-tcp", S1, "9000", str(RATE),
                  stdout=subprocess.PIPE, text=True)
    assert wait_for(lambda: [s for s in sessions() if s["remote"] == f"{S1}:9000"], 10)
    (download,) = [s for s in sessions() if s["remote"] == f"{S1}:9000"]
    capture = STATE_DIR / PREFIX / "c1-attacks.pcap"
    dump = in_ns("c1", "tcpdump", "-n", "-i", "eth0", "-U", "-w", str(capture), f"src host {S2}",
                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dump.stderr.readline()                                  # "listening on eth0 ..."
    before, tables = status()["counters"], status()["sessions"]
    try:
        sent = (attack("gre") + attack("l2tp") + attack("esp", esp["esp_spi_in"], esp["esp_spi_out"])
                + attack("natt", esp["esp_spi_in"], esp["esp_spi_out"])
                + attack("ike", esp["ike_spi_i"], esp["ike_spi_r"]) + attack("ports"))
        time.sleep(1)
    finally:
        dump.terminate()
        dump.wait(10)
    after = status()["counters"]
    from scapy.utils import rdpcap
    assert len(rdpcap(str(capture))) == 0                   # nothing from the attacker reached the client
    assert dropped(after) - dropped(before) >= sent // 2, (sent, {k: after[k] - before[k] for k in after
                                                                  if k.startswith("drop_") and after[k] != before[k]})
    assert status()["sessions"] == tables                   # and nothing was made of it

    rst_before = after["drop_pptp_rst_out_of_window"]
    for _, tcp in (("pptp control", control), ("download", download)):
        port, remote_port = tcp["outside"].rsplit(":", 1)[1], tcp["remote"].rsplit(":", 1)[1]
        attack("icmp", S1, "tcp", port, remote_port)
        attack("rst", S1, remote_port, port)
    assert status()["counters"]["drop_pptp_rst_out_of_window"] - rst_before == RSTS

    out, _ = fetch.communicate(timeout=120)
    server.wait(30)
    assert out.split() == [str(DOWNLOAD), hashlib.sha256(payload(DOWNLOAD, 7)).hexdigest()]
    survivors = vpn_flows()
    assert sorted(survivors) == sorted(flows)               # the same call, tunnel and association
    counts = {i: f["packets_in"] + f["packets_out"] for i, f in survivors.items()}
    assert wait_for(lambda: all(f["packets_in"] + f["packets_out"] > counts[i] for i, f in vpn_flows().items()), 20)
    assert " 0% packet loss" in vr("lab", "--prefix", PREFIX, "ping", "c1", "ipsec", "-c", "3")
    assert [c["call_state"] for c in sessions() if c["proto"] == "gre"] == ["established"]
