"""OpenVPN (UDP and TCP) and WireGuard through the router, from two clients at once, as `vpnrouter lab` runs them.

Every peer is the real program: openvpn on a TUN, WireGuard as the kernel's
module or wireguard-go.  They need no passthrough: each tunnel is one UDP or
TCP flow, so two clients to the same server are two NAT sessions with outside
ports of their own, and both tunnels carry pings at once.
"""

from __future__ import annotations

import json
import subprocess
import sys

from router.lab.kernel import has_wireguard
from router.lab.topology import PEERS_DIR, ROUTER_WAN, STATE_DIR
from router.lab.vpns import TUNNEL_PORTS, TUNNELS
from tests.integration.conftest import ROOT, cli_lab

PREFIX = "vt"
SERVER = "198.51.100.10"
CLIENTS = {"c1": "192.168.77.11", "c2": "192.168.77.12"}


def lab(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "router", "lab", "--prefix", PREFIX, *args], capture_output=True,
                            text=True, timeout=180, cwd=ROOT)
    if check:
        assert result.returncode == 0, f"vpnrouter lab {' '.join(args)}: {result.stdout}\n{result.stderr}"
    return result


def sessions() -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "router", "ctl", "--socket", str(STATE_DIR / PREFIX / "control.sock"),
                          "sessions", "--json"], capture_output=True, text=True, timeout=30, cwd=ROOT, check=True)
    return json.loads(out.stdout)


def tunnel_sessions(proto: str) -> dict[str, dict]:
    """The router's NAT session of each client's ``proto`` tunnel to the server, by client address."""
    l4, port = TUNNEL_PORTS[proto]
    return {s["inside"].rpartition(":")[0]: s for s in sessions()
            if s["proto"] == l4 and s["remote"] == f"{SERVER}:{port}"}


def test_two_clients_hold_every_tunnel_to_one_server_at_once():
    with cli_lab(PREFIX, "--clients", "2", "--servers", "1") as out:
        assert "OpenVPN over UDP and TCP, and WireGuard" in out
        status = json.loads(lab("status", "--json").stdout)
        assert status["peers"]["wireguard"] == ("kernel" if has_wireguard() else "wireguard-go")
        assert all(status["servers"]["s1"][proto] for proto in TUNNELS)

        for client in CLIENTS:
            for proto in TUNNELS:
                assert f"{proto} up" in lab("connect", client, proto, "s1").stdout
        for proto in TUNNELS:
            for client in CLIENTS:                          # every tunnel carries IP while all six are up
                assert "2 received" in lab("ping", client, proto, "-c", "2").stdout
            flows = tunnel_sessions(proto)
            assert set(flows) == set(CLIENTS.values()), f"{proto}: {flows}"
            outside = {s["outside"] for s in flows.values()}
            assert len(outside) == 2 and all(o.startswith(f"{ROUTER_WAN}:") for o in outside)
            assert all(s["packets_in"] > 0 and s["packets_out"] > 0 for s in flows.values())
            assert all("vpn" not in s for s in flows.values())     # no helper: plain NAT sessions

        log = (PEERS_DIR / PREFIX / "c1" / "wireguard" / "wireguard.log").read_text()
        assert ("the kernel's module" if has_wireguard() else "wireguard: wireguard-go") in log

        lab("disconnect", "c1", "wireguard")                # one client goes; the other's tunnel stays
        assert "holds no wireguard session" in lab("ping", "c1", "wireguard", check=False).stderr
        assert "1 received" in lab("ping", "c2", "wireguard", "-c", "1").stdout
        again = lab("connect", "c2", "openvpn", check=False)
        assert again.returncode == 1 and "already holds a openvpn session" in again.stderr
