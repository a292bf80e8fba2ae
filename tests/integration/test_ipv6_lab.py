"""The LAN's native IPv6 on an IPv6 WAN, as `vpnrouter lab up --wan map-e|ds-lite` builds it: the clients take
their addresses from the router's Router Advertisements (RFC 4861 §6.2, SLAAC: RFC 4862), reach the servers over
IPv6 untranslated through its firewall (RFC 6092), and carry OpenVPN and WireGuard over IPv6 from two clients at
once (`lab connect --ipv6`).

Each mode gets one lab (two clients, one server) for the tests of this module that take it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from ipaddress import ip_address, ip_network

import pytest

from router.lab import softwire
from router.lab.check import LABELS, NOT_APPLICABLE, OVER_IPV6, Check, table
from router.lab.topology import PEERS_DIR, Lab, LabError, client_ipv6
from router.lab.vpns import TUNNEL_PORTS, TUNNELS, VpnLab
from tests.integration.conftest import ctl, lab_command, wan_lab

PREFIX = "v6"
LAN_PREFIXES = {"map-e": "2001:db8:a:2301::/64", "ds-lite": "2001:db8:b:101::/64"}
SERVER6 = "2001:db8:5::10"
SERVER4 = "198.51.100.10"
CLIENTS = ("c1", "c2")
SLAAC_WAIT = 20.0
"""Seconds a client may take to hear an RA and pass DAD (it solicits every 4 s at most: topology.py)."""
LISTEN6 = ("import socket; s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.bind(('::', 9006)); "
           "s.settimeout(10); print('ready', flush=True); print(s.recvfrom(100)[1][0])")
SEND6 = "import socket, sys; socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).sendto(b'hi', (sys.argv[1], 9006))"


def lab_cli(*args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
    return lab_command(PREFIX, *args, check=check, timeout=timeout)


@pytest.fixture(scope="module", params=["map-e", "ds-lite"])
def wan(request):
    with wan_lab(PREFIX, request.param) as (lab, _):
        yield lab


def addresses(lab: Lab) -> dict[str, str]:
    """Each client's SLAAC address."""
    return {name: client_ipv6(lab, int(name[1:]), wait=SLAAC_WAIT) for name in CLIENTS}


def sessions(lab: Lab) -> list[dict]:
    return json.loads(ctl(lab, "sessions", "--json"))


def source_seen_by_server(lab: Lab, client: str) -> str:
    """The source address s1 sees on a UDP datagram from ``client`` to its IPv6 address."""
    listener = lab.popen_in(lab.server(1), sys.executable, "-c", LISTEN6, stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout.readline().strip() == "ready"
        lab.run_in(lab.client(int(client[1:])), sys.executable, "-c", SEND6, SERVER6)
        return listener.communicate(timeout=15)[0].strip()
    finally:
        listener.kill()
        listener.wait()


def disconnect_all(tunnels=TUNNELS) -> None:
    for client in CLIENTS:
        for proto in tunnels:
            lab_cli("disconnect", client, proto, check=False)


def test_the_lab_builds_ipv6_for_its_wan(wan):
    assert softwire.lan_prefix6(wan.wan) == LAN_PREFIXES[wan.wan]
    assert wan.server_ip6(1) == SERVER6
    routes = wan.run_in(wan.provider, "ip", "-6", "route", "show").stdout
    delegated = {"map-e": softwire.RULE_IPV6_PREFIX, "ds-lite": softwire.DELEGATED_PREFIX_DS_LITE}[wan.wan]
    assert f"{delegated} via {softwire.ROUTER_LINK6}" in routes
    config = wan.config_path.read_text()
    assert ('delegated_prefix = "2001:db8:b:100::/56"' in config) == (wan.wan == "ds-lite")
    server = wan.run_in(wan.server(1), "ip", "-6", "addr", "show", "dev", "eth0", "scope", "global").stdout
    assert f"{SERVER6}/64" in server
    assert f"s1 {SERVER4}, {SERVER6}:" in lab_cli("status").stdout


def test_clients_take_addresses_in_the_lan_prefix_from_the_routers_ras(wan):
    found = addresses(wan)
    assert all(ip_address(a) in ip_network(LAN_PREFIXES[wan.wan]) for a in found.values()), found
    assert len(set(found.values())) == 2
    for name in CLIENTS:
        routes = json.loads(wan.run_in(wan.client(int(name[1:])), "ip", "-6", "-j", "route", "show",
                                       "default").stdout)
        assert [(r["gateway"][:5], r["dev"], r["protocol"]) for r in routes] == [("fe80:", "eth0", "ra")], routes


def test_clients_reach_the_server_over_ipv6_untranslated(wan):
    found = addresses(wan)
    for name in CLIENTS:
        ping = wan.run_in(wan.client(int(name[1:])), "ping", "-6", "-n", "-c", "2", "-W", "2", SERVER6,
                          check=False)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        assert source_seen_by_server(wan, name) == found[name]


def test_tunnels_over_ipv6_from_two_clients_at_once(wan):
    found = addresses(wan)
    try:
        for client in CLIENTS:
            for proto in TUNNELS:
                assert f"{proto} up" in lab_cli("connect", client, proto, "s1", "--ipv6").stdout
        for proto in TUNNELS:
            for client in CLIENTS:                         # every tunnel carries IP while all six are up
                assert "2 received" in lab_cli("ping", client, proto, "-c", "2").stdout
        status = lab_cli("status").stdout
        for client in CLIENTS:
            for proto in TUNNELS:
                assert f"{client} {proto} to s1 over IPv6: running" in status
        listed = json.loads(lab_cli("status", "--json").stdout)["clients"]
        assert all(listed[c][p]["ipv6"] for c in CLIENTS for p in TUNNELS)
        for proto in TUNNELS:
            l4, port = TUNNEL_PORTS[proto]
            flows = [s for s in sessions(wan) if s.get("family") == "ipv6" and s["proto"] == l4
                     and s["remote"] == f"[{SERVER6}]:{port}"]
            assert {s["inside"].rpartition(":")[0].strip("[]") for s in flows} == set(found.values()), flows
            assert not [s for s in sessions(wan) if s["remote"] == f"{SERVER4}:{port}" and s["proto"] == l4]
        log = "".join((PEERS_DIR / PREFIX / "s1" / p / "openvpn.log").read_text() for p in ("openvpn", "openvpn-tcp"))
        assert all(f"[AF_INET6]{a}" in log for a in found.values())    # the server saw each client's own address
    finally:
        disconnect_all()


def test_ipv4_and_ipv6_tunnels_side_by_side(wan):
    """The servers' dual-stack sockets take IPv4 too: c1 over IPv4, c2 over IPv6, to the same daemons."""
    try:
        for proto in TUNNELS:
            assert f"{proto} up" in lab_cli("connect", "c1", proto, "s1").stdout
            assert f"{proto} up" in lab_cli("connect", "c2", proto, "s1", "--ipv6").stdout
        for proto in TUNNELS:
            for client in CLIENTS:
                assert "2 received" in lab_cli("ping", client, proto, "-c", "2").stdout
        status = lab_cli("status").stdout
        assert "c1 wireguard to s1: running" in status and "c2 wireguard to s1 over IPv6: running" in status
    finally:
        disconnect_all()


def test_ipv6_is_refused_where_it_means_nothing(wan):
    for proto in ("pptp", "l2tp", "ipsec"):
        refused = lab_cli("connect", "c1", proto, "s1", "--ipv6", check=False)
        assert refused.returncode == 1
        assert "--ipv6: only for openvpn, openvpn-tcp and wireguard" in refused.stderr
    with pytest.raises(LabError) as refused:      # what `lab connect --ipv6` says in a lab on an IPv4 WAN
        VpnLab(Lab(prefix=PREFIX, wan="ipv4")).connect("c1", "wireguard", ipv6=True)
    assert str(refused.value) == "--ipv6 needs a lab with an IPv6 WAN: lab up --wan map-e|ds-lite"


def test_lab_check_measures_the_tunnels_over_ipv6(wan):
    matrix = json.loads(lab_cli("check", "--json", "--wait", "10", timeout=900).stdout)
    (column,) = matrix.values()
    assert {kind: column[kind]["result"] for kind in OVER_IPV6} == dict.fromkeys(OVER_IPV6, "two"), column
    text = table(matrix)
    assert all(re.search(rf"^{re.escape(LABELS[kind])} +two$", text, re.MULTILINE) for kind in OVER_IPV6), text
    assert not any(json.loads(lab_cli("status", "--json").stdout)["clients"].values())     # nothing left behind


def test_an_ipv4_lab_has_no_ipv6_cells():
    ipv4 = Check(VpnLab(Lab(prefix=PREFIX, wan="ipv4")))
    assert all(ipv4.kind(kind, events=None) == NOT_APPLICABLE for kind in OVER_IPV6)
    text = table({"default": {kind: NOT_APPLICABLE for kind in OVER_IPV6}})
    assert "WireGuard, IPv6" in text and "n/a: not measured: no IPv6 in an ipv4 lab" in text
