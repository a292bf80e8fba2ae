"""`vpnrouter lab`: up, connect each VPN, status, disconnect, down — and down after the router was SIGKILLed.

The commands run as a user runs them, one process each; every VPN peer is a
real daemon (pptp-linux/pptpd and xl2tpd with the pppd stand-in, strongSwan).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from router.helpers.registry import names
from router.lab.kernel import has_esp, has_ppp, has_wireguard
from router.lab.topology import PEERS_DIR, STATE_DIR
from tests.integration.conftest import ROOT, cli_lab, is_vpn_flow

PREFIX = "vx"


def vr(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "router", *args], capture_output=True, text=True, timeout=180,
                            cwd=ROOT)
    if check:
        assert result.returncode == 0, f"vpnrouter {' '.join(args)}: {result.stdout}\n{result.stderr}"
    return result


def lab(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return vr("lab", "--prefix", PREFIX, *args, check=check)


def namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(f"{PREFIX}-")]


def live_processes_mentioning(path: Path) -> list[str]:
    """Live (not zombie) processes whose command line names the lab's directories."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            state = (proc / "stat").read_text().split(") ", 1)[1][:1]
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue
        if state != "Z" and str(path) in cmdline:
            found.append(f"{proc.name}: {cmdline}")
    return found


def assert_nothing_left() -> None:
    assert namespaces() == []
    assert not (STATE_DIR / PREFIX).exists() and not (PEERS_DIR / PREFIX).exists()
    assert live_processes_mentioning(PEERS_DIR / PREFIX) == []
    assert live_processes_mentioning(STATE_DIR / PREFIX) == []
    mounts = Path("/proc/mounts").read_text()
    assert f"/run/netns/{PREFIX}-" not in mounts and str(PEERS_DIR / PREFIX) not in mounts


@pytest.fixture(scope="module")
def lab_up():
    with cli_lab(PREFIX) as out:
        assert "The lab is up" in out
        yield


def vpn_flows(socket: Path) -> list[dict]:
    sessions = json.loads(vr("ctl", "--socket", str(socket), "sessions", "--json").stdout)
    return [s for s in sessions if is_vpn_flow(s)]


def test_connect_each_vpn_and_see_it(lab_up):
    socket = STATE_DIR / PREFIX / "control.sock"
    for client, proto, server in (("c1", "pptp", "s1"), ("c2", "l2tp", "s1"), ("c3", "ipsec", "s2")):
        out = lab("connect", client, proto, server).stdout
        assert f"{proto} up" in out
    flows = {s["vpn"]: s for s in vpn_flows(socket)}
    assert set(flows) == {"pptp", "l2tp", "ipsec"}
    assert flows["pptp"]["client"] == "192.168.77.11" and flows["pptp"]["server"] == "198.51.100.10"
    assert flows["pptp"]["call_state"] == "established"
    assert flows["l2tp"]["client"] == "192.168.77.12" and flows["l2tp"]["state"] == "established"
    assert flows["ipsec"]["gateway"] == "198.51.100.20" and flows["ipsec"]["state"] == "established"
    status = json.loads(lab("status", "--json").stdout)
    assert status["router"]["running"] and len(status["vpn_sessions"]) == 3
    assert status["peers"] == {"ppp": "pppd" if has_ppp() else "stand-in", "esp": "kernel" if has_esp() else "libipsec",
                               "wireguard": "kernel" if has_wireguard() else "wireguard-go"}
    assert all(all(status["servers"][s][p] for p in names()) for s in ("s1", "s2"))
    # a second connect of the same kind from the same client is refused with the reason
    again = lab("connect", "c1", "pptp", check=False)
    assert again.returncode == 1 and "already holds a pptp session" in again.stderr
    bad = lab("connect", "c9", "pptp", check=False)
    assert bad.returncode == 1 and "no client 'c9'" in bad.stderr


def test_ping_through_each_tunnel(lab_up):
    """`lab ping` crosses the IPsec tunnel (ESP through the router); PPTP and L2TP carry IP only with the real pppd:
    under the stand-in it says why it cannot, with the PPP frames seen so far."""
    ipsec = lab("ping", "c3", "ipsec", "-c", "2")
    assert "2 received" in ipsec.stdout
    for client, proto in (("c1", "pptp"), ("c2", "l2tp")):
        result = lab("ping", client, proto, "-c", "2", check=False)
        if has_ppp():
            assert result.returncode == 0 and "2 received" in result.stdout
        else:
            assert result.returncode == 1 and "pppd stand-in" in result.stderr and "frames received" in result.stderr
    assert "holds no pptp session" in lab("ping", "c2", "pptp", check=False).stderr


def test_disconnect_ends_the_session(lab_up):
    socket = STATE_DIR / PREFIX / "control.sock"
    lab("disconnect", "c1", "pptp")
    assert "pptp" not in {s["vpn"] for s in vpn_flows(socket)}
    assert "c1 pptp" not in lab("status").stdout
    assert lab("disconnect", "c1", "pptp", check=False).returncode == 1


def test_down_after_the_router_was_killed_leaves_nothing_and_runs_twice(lab_up):
    pid = int((STATE_DIR / PREFIX / "router.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    assert "router NOT running" in lab("status").stdout
    lab("down")
    assert_nothing_left()
    lab("down")                     # a second time: nothing to do, no error
    assert_nothing_left()
    assert lab("status", check=False).returncode == 1
