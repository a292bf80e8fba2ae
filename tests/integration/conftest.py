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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from router.control import schema
from router.helpers import registry
from router.lab.topology import Lab

ROOT = Path(__file__).resolve().parents[2]


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("integration tests need root for network namespaces and TAP devices (run `make test` as root)")
    if not Path("/dev/net/tun").exists():
        pytest.fail("integration tests need /dev/net/tun")


@contextmanager
def lab_for(prefix: str, *, router: bool = True, extra_config: str = "", **lab_kwargs) -> Iterator[Lab]:
    """A lab built in this process (``Lab(prefix=prefix, **lab_kwargs)``: clients, servers, forwards...), up
    for the length of the block and removed after it, whatever happened; a module's fixture yields inside it.

    ``router``: the router runs with ``extra_config`` added to the lab's configuration; False: the block starts
    it (after its own changes to the lab), or never does.  Fails at once without root."""
    require_root()
    lab = Lab(prefix=prefix, **lab_kwargs)
    try:
        lab.up()
        if router:
            lab.start_router(extra_config=extra_config)
        yield lab
    finally:
        lab.down()


@contextmanager
def cli_lab(prefix: str, *options: str) -> Iterator[str]:
    """The same, made as a user makes it: `vpnrouter lab --prefix PREFIX OPTIONS up` (its VPN servers started,
    the router running on by itself) and `vpnrouter lab --prefix PREFIX down` before and after; what `up`
    printed.  For the modules that test the lab's commands and drive everything through them."""
    require_root()
    vpnrouter("lab", "--prefix", prefix, "down")
    try:
        yield vpnrouter("lab", "--prefix", prefix, *options, "up")
    finally:
        vpnrouter("lab", "--prefix", prefix, "down")


def lab_command(prefix: str, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
    """`vpnrouter lab --prefix PREFIX ARGS` as a user types it; with ``check``, it must succeed."""
    result = subprocess.run([sys.executable, "-m", "router", "lab", "--prefix", prefix, *args], capture_output=True,
                            text=True, timeout=timeout, cwd=ROOT)
    if check:
        assert result.returncode == 0, f"vpnrouter lab {' '.join(args)}: {result.stdout}\n{result.stderr}"
    return result


@contextmanager
def wan_lab(prefix: str, mode: str, clients: int = 2, servers: int = 1) -> Iterator[tuple[Lab, str]]:
    """`vpnrouter lab --prefix PREFIX --clients 2 --servers 1 up --wan MODE`, removed after, whatever happened:
    the lab (as ``Lab``) and what `up` printed."""
    require_root()
    lab_command(prefix, "down")
    try:
        out = lab_command(prefix, "--clients", str(clients), "--servers", str(servers), "up", "--wan", mode,
                          timeout=300).stdout
        yield Lab(prefix=prefix, clients=clients, servers=servers, wan=mode), out
    finally:
        lab_command(prefix, "down")


def vpnrouter(*args: str, timeout: float = 300) -> str:
    """`vpnrouter ARGS` in a process of its own; its output (it must succeed)."""
    result = subprocess.run([sys.executable, "-m", "router", *args], capture_output=True, text=True,
                            timeout=timeout, cwd=ROOT)
    assert result.returncode == 0, f"vpnrouter {' '.join(args)}: {result.stdout}\n{result.stderr}"
    return result.stdout


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


def is_vpn_flow(session: dict) -> bool:
    """Whether a session (of `ctl sessions --json`) is a VPN's own flow: a call, tunnel or association, the
    ``flow_proto`` its registered helper declares (GRE for PPTP, L2TP, ESP for IPsec)."""
    return schema.is_vpn_flow(session, schema.flow_protos(registry.descriptions()))


def vpn_flows(lab: Lab) -> dict[int, dict]:
    """The router's VPN flows by id."""
    return {s["id"]: s for s in json.loads(ctl(lab, "sessions", "--json")) if is_vpn_flow(s)}


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
    with lab_for("vt", clients=2, servers=2,
                 forwards=[{"proto": "tcp", "port": 8080, "to": "192.168.77.12:8000"}]) as lab:
        yield lab


@pytest.fixture
def peers(lab):
    return Peers(lab)
