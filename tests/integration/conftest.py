"""The lab for integration tests: namespaces around the real `vpnrouter run` process.

These tests need root and network namespaces.  Where they cannot run they
fail with the reason (never a silent skip): CI runs them as root.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from router.lab.topology import Lab

ROOT = Path(__file__).resolve().parents[2]


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("integration tests need root for network namespaces and TAP devices (run `make test` as root)")
    if not Path("/dev/net/tun").exists():
        pytest.fail("integration tests need /dev/net/tun")


def ctl(lab: Lab, *args: str) -> str:
    """`vpnrouter ctl ARGS` against the lab's router, as a user runs it; its output (it must succeed)."""
    result = subprocess.run([sys.executable, "-m", "router", "ctl", "--socket", str(lab.socket_path), *args],
                            capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return result.stdout


def counters(lab: Lab) -> dict:
    return json.loads(ctl(lab, "status", "--json"))["counters"]


def wait_for(predicate, seconds: float = 30.0):
    """Poll until ``predicate()`` is true; the last value either way (bounded, never a timing assertion)."""
    deadline = time.monotonic() + seconds
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(0.25)
        value = predicate()
    return value


THREE_VPNS = (("c1", "pptp"), ("c1", "l2tp"), ("c2", "ipsec"))
"""A PPTP call and an L2TP tunnel from c1, an IPsec tunnel from c2, all to s1."""


def three_vpns(lab: Lab):
    """The lab's VPN servers started and THREE_VPNS connected; the ``VpnLab``."""
    from router.lab.vpns import VpnLab
    vpns = VpnLab(lab)
    vpns.start_servers()
    for client, vpn in THREE_VPNS:
        vpns.connect(client, vpn)
    return vpns


def vpn_flows(lab: Lab) -> dict[int, dict]:
    """The router's VPN flows (GRE calls, L2TP tunnels, ESP associations) by id."""
    return {s["id"]: s for s in json.loads(ctl(lab, "sessions", "--json"))
            if s.get("vpn") and s["proto"] in ("gre", "l2tp", "esp")}


class Peers:
    """Runs tests/integration/peers.py roles inside the lab's namespaces."""

    def __init__(self, lab: Lab):
        self.lab = lab

    def cmd(self, role: str, *args) -> list[str]:
        return [sys.executable, "-m", "tests.integration.peers", role, *map(str, args)]

    def run(self, ns: str, role: str, *args, timeout: float = 60) -> str:
        result = self.lab.run_in(ns, *self.cmd(role, *args), timeout=timeout, cwd=ROOT)
        return result.stdout.strip()

    def start(self, ns: str, role: str, *args) -> subprocess.Popen:
        proc = self.lab.popen_in(ns, *self.cmd(role, *args), cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        return proc


@pytest.fixture(scope="module")
def lab():
    require_root()
    lab = Lab(prefix="vt", clients=2, servers=2,
              forwards=[{"proto": "tcp", "port": 8080, "to": "192.168.77.12:8000"}])
    try:
        lab.up()
        lab.start_router()
        yield lab
    finally:
        lab.down()


@pytest.fixture
def peers(lab):
    return Peers(lab)
