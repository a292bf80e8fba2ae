"""Behaviours with real VPN peers through the running router (issue 10): single passthrough handing over, a port
set seen from the server, a deny rule, and `lab check`'s matrix against what each profile documents.

Everything is done as a user does it: `vpnrouter lab` and `vpnrouter ctl`, one process each.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from router.helpers.registry import names
from router.portset import PortSet
from router.lab.topology import STATE_DIR
from router.lab.vpns import TUNNELS
from tests.integration.conftest import ROOT, cli_lab, wait_for

PREFIX = "vb"
SOCKET = STATE_DIR / PREFIX / "control.sock"
C1, C2 = "192.168.77.11", "192.168.77.12"
S1 = "198.51.100.10"
WAN = "198.51.100.1"
REFUSED_WAIT = "6"


def vr(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "router", *args], capture_output=True, text=True,
                            timeout=timeout, cwd=ROOT)
    if check:
        assert result.returncode == 0, f"vpnrouter {' '.join(args)}: {result.stdout}\n{result.stderr}"
    return result


def lab(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    return vr("lab", "--prefix", PREFIX, *args, check=check, timeout=timeout)


def ctl(*args: str) -> str:
    return vr("ctl", "--socket", str(SOCKET), *args).stdout


def status() -> dict:
    return json.loads(ctl("status", "--json"))


def sessions() -> list[dict]:
    return json.loads(ctl("sessions", "--json"))


def close_sessions_of(vpn: str, client: str) -> None:
    """End a client's sessions and flows of a VPN, as `ctl close` (or the dashboard's close) does."""
    for s in sessions():
        inside = s.get("client") or s["inside"].rsplit(":", 1)[0]
        if s.get("vpn") == vpn and inside == client:
            vr("ctl", "--socket", str(SOCKET), "close", str(s["id"]), check=False)


@pytest.fixture(scope="module")
def lab_up():
    with cli_lab(PREFIX):
        yield


@pytest.fixture
def default_profile(lab_up):
    ctl("profile", "default")
    yield
    ctl("profile", "default")
    for rule in reversed(json.loads(ctl("rules", "--json"))["rules"]):
        ctl("rules", "del", str(rule["index"]))


@pytest.mark.parametrize("vpn", names())
def test_single_refuses_a_second_client_then_lets_it_through(default_profile, vpn):
    ctl("passthrough", vpn, "single")
    lab("connect", "c1", vpn, "s1")
    assert status()["passthrough_holder"][vpn] == C1
    before = status()["counters"]["drop_refused_single"]
    refused = lab("connect", "c2", vpn, "s1", "--wait", REFUSED_WAIT, check=False)
    assert refused.returncode == 1 and "did not come up" in refused.stderr
    assert status()["counters"]["drop_refused_single"] > before
    assert f"{vpn} on (single, held by {C1})" in ctl("status")
    lab("disconnect", "c1", vpn)
    close_sessions_of(vpn, C1)             # what is left of the holder's (a UDP mapping waits out its timeout)
    assert wait_for(lambda: status()["passthrough_holder"][vpn] is None, 15), status()["passthrough_holder"]
    lab("connect", "c2", vpn, "s1")
    assert status()["passthrough_holder"][vpn] == C2
    lab("disconnect", "c2", vpn)
    close_sessions_of(vpn, C2)
    ctl("passthrough", vpn, "multi")


def test_pptp_hands_over_when_its_control_connection_closes(default_profile):
    """No `ctl close` needed for PPTP: both FINs end the control connection's hold."""
    ctl("passthrough", "pptp", "single")
    lab("connect", "c1", "pptp", "s1")
    lab("disconnect", "c1", "pptp")
    assert wait_for(lambda: status()["passthrough_holder"]["pptp"] is None, 15), sessions()
    lab("connect", "c2", "pptp", "s1")
    lab("disconnect", "c2", "pptp")
    ctl("passthrough", "pptp", "multi")


def server_capture(seconds_after: float, action) -> list[tuple[str, int]]:
    """(protocol, source port) of every UDP and TCP packet from the router's address that s1 saw during
    ``action``, from a tcpdump in s1."""
    pcap = STATE_DIR / PREFIX / "s1.pcap"
    dump = subprocess.Popen(["ip", "netns", "exec", f"{PREFIX}-s1", "tcpdump", "-n", "-i", "eth0", "-U", "-w",
                             str(pcap), f"src host {WAN} and (udp or tcp)"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    dump.stderr.readline()                 # "listening on eth0 ..."
    try:
        action()
        time.sleep(seconds_after)
    finally:
        dump.terminate()
        dump.wait(10)
    from scapy.layers.inet import TCP, UDP
    from scapy.utils import rdpcap
    return [("udp" if UDP in p else "tcp", (p[UDP] if UDP in p else p[TCP]).sport) for p in rdpcap(str(pcap))]


def test_port_set_from_the_servers_side(default_profile):
    """Under map-e every source port s1 sees lies in the set: many UDP flows, TCP connections, a download;
    a PPTP call is refused with the reason; IPsec NAT-T works."""
    ctl("profile", "map-e")
    nat = status()["nat"]
    assert nat["port_set"]["size"] == 240
    ports = PortSet(nat["port_set"]["offset"], nat["port_set"]["psid_length"], nat["port_set"]["psid"])
    s1, c1 = f"{PREFIX}-s1", f"{PREFIX}-c1"
    subprocess.run(["ip", "netns", "exec", s1, "iperf3", "-s", "-D", "-1"], check=True)
    time.sleep(0.5)
    flows = ("import socket\nfor p in range(30000, 30060):\n"
             " s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('', p))\n"
             f" s.sendto(b'x', ('{S1}', 9999)); s.close()\n"
             "for p in range(31000, 31010):\n"
             " t = socket.socket(); t.settimeout(2)\n"
             f" t.connect_ex(('{S1}', 9)); t.close()\n")

    def traffic():
        subprocess.run(["ip", "netns", "exec", c1, sys.executable, "-c", flows], check=True, timeout=60)
        subprocess.run(["ip", "netns", "exec", c1, "iperf3", "-c", S1, "-R", "-t", "2"], check=True,
                       capture_output=True, timeout=60)

    seen = server_capture(1.0, traffic)
    udp = {port for proto, port in seen if proto == "udp"}
    tcp = {port for proto, port in seen if proto == "tcp"}
    assert len(udp) >= 60 and len(tcp) >= 11, (len(udp), len(tcp))
    assert all(port in ports for port in udp | tcp), sorted(p for p in udp | tcp if p not in ports)

    before = status()["counters"]["drop_portless_under_port_set"]
    refused = lab("connect", "c1", "pptp", "s1", "--wait", REFUSED_WAIT, check=False)
    assert refused.returncode == 1
    assert status()["counters"]["drop_portless_under_port_set"] > before
    lab("connect", "c2", "ipsec", "s1")
    assert "0% packet loss" in lab("ping", "c2", "ipsec", "-c", "3").stdout
    flows_now = [s for s in sessions() if s.get("vpn") == "ipsec" and s.get("client") == C2 and s["proto"] == "udp"]
    assert flows_now and all(int(s["outside"].rsplit(":", 1)[1]) in ports for s in flows_now)
    lab("disconnect", "c2", "ipsec")
    close_sessions_of("ipsec", C2)


def test_a_deny_rule_stops_one_clients_tunnel_and_not_anothers(default_profile):
    ctl("rules", "add", "deny", "--vpn", "ipsec", "--client", C2)
    denied = lab("connect", "c2", "ipsec", "s1", "--wait", REFUSED_WAIT, check=False)
    assert denied.returncode == 1
    lab("connect", "c1", "ipsec", "s1")
    assert "0% packet loss" in lab("ping", "c1", "ipsec", "-c", "3").stdout
    (rule,) = json.loads(ctl("rules", "--json"))["rules"]
    assert rule["client"] == f"{C2}/32" and rule["action"] == "deny" and rule["hits"] >= 1
    assert status()["counters"]["drop_denied_by_rule"] >= 1
    lab("disconnect", "c1", "ipsec")
    close_sessions_of("ipsec", C1)


NO_PASSTHROUGH = dict.fromkeys(TUNNELS, "two") | dict.fromkeys(("openvpn6", "openvpn-tcp6", "wireguard6"), "n/a")
"""OpenVPN (UDP, TCP) and WireGuard: one flow each, which every profile's NAT translates for any number of clients;
over IPv6 they are measured only where the lab has an IPv6 WAN (``lab check --wan``)."""
EXPECTED = {
    "default": dict.fromkeys(("pptp", "l2tp", "ipsec", "esp"), "two") | NO_PASSTHROUGH,
    "basic-home": dict.fromkeys(("pptp", "l2tp", "ipsec", "esp"), "one") | NO_PASSTHROUGH,
    "strict": dict.fromkeys(("pptp", "l2tp", "ipsec", "esp"), "fails") | NO_PASSTHROUGH,
    "linux": dict.fromkeys(("pptp", "l2tp", "ipsec", "esp"), "two") | NO_PASSTHROUGH,
    "map-e": {"pptp": "fails", "l2tp": "two", "ipsec": "two", "esp": "fails"} | NO_PASSTHROUGH,
}
"""What the README's profile table documents for these peers (the lab's userspace xl2tpd serves two LACs)."""


def test_lab_check_matrix_matches_the_profiles(default_profile):
    result = lab("check", "--all-profiles", "--json", "--wait", REFUSED_WAIT, timeout=900)
    matrix = json.loads(result.stdout)
    assert {p: {k: v["result"] for k, v in kinds.items()} for p, kinds in matrix.items()} == EXPECTED
    assert matrix["basic-home"]["pptp"]["reason"] == f"refused by single passthrough (held by {C1})"
    assert matrix["strict"]["l2tp"]["reason"] == "passthrough off"
    assert matrix["map-e"]["esp"]["reason"].startswith("portless under a port set")
    assert status()["nat"]["profile"] == "default"           # put back
    assert not [s for s in sessions() if s.get("vpn")]        # nothing left behind
