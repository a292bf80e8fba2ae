"""The router on an IPv6 WAN, as `vpnrouter lab up --wan map-e|ds-lite` builds it: real peers through a MAP-E
border relay (RFC 7597) and through a DS-Lite AFTR (RFC 6333) whose NAT44 is Linux's own.

Each mode gets one lab (two clients, one server) for the tests of this module that take it.
"""

from __future__ import annotations

import hashlib
import json
import subprocess

import pytest

from router.lab import softwire
from router.lab.topology import Lab
from router.lab.vpns import TUNNEL_PORTS, TUNNELS, VpnLab
from router.portset import PortSet
from tests.integration.conftest import Peers, ctl, lab_command, wan_lab
from tests.integration.peers import payload

PREFIX = "vw"
SERVER = "198.51.100.10"
CLIENTS = {"c1": "192.168.77.11", "c2": "192.168.77.12"}
PORT_SET = PortSet(offset=softwire.PSID_OFFSET, psid_length=4, psid=3)


def lab_cli(*args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
    return lab_command(PREFIX, *args, check=check, timeout=timeout)


@pytest.fixture(scope="module", params=["map-e", "ds-lite"])
def wan(request):
    with wan_lab(PREFIX, request.param) as (lab, _):
        yield lab


@pytest.fixture(scope="module")
def map_e():
    with wan_lab(PREFIX, "map-e") as (lab, _):
        yield lab


@pytest.fixture(scope="module")
def ds_lite():
    with wan_lab(PREFIX, "ds-lite") as (lab, _):
        yield lab


def status(lab: Lab) -> dict:
    return json.loads(ctl(lab, "status", "--json"))


def sessions(lab: Lab) -> list[dict]:
    return json.loads(ctl(lab, "sessions", "--json"))


def test_the_wan_is_said_by_the_router_and_the_lab(wan):
    wan_status = status(wan)["wan"]
    assert wan_status["mode"] == wan.wan and wan_status["gateway6_mac"] is not None
    lab_status = json.loads(lab_cli("status", "--json").stdout)["wan"]
    nat44 = {"nat44": softwire.aftr_pptp_helper_status(wan)} if wan.wan == "ds-lite" else {}
    assert lab_status == {"mode": wan.wan, "provider": wan.provider, "endpoint": softwire.endpoint_kind(), **nat44}
    assert f"WAN: {wan.wan} through {wan.provider}" in lab_cli("status").stdout
    if nat44:
        assert "tracks PPTP (TCP 1723) and its GRE by call ID" in lab_cli("status").stdout
    log = (wan.state_dir / "router.log").read_text()
    assert f"WAN {wan.wan} on 2001:db8:ffff::2/64, softwire to" in log
    assert ("passthrough switches have no effect: DS-Lite" in log) == (wan.wan == "ds-lite")
    if wan.wan == "map-e":
        assert wan_status["map_e"]["ipv4"] == softwire.MAP_IPV4 and wan_status["map_e"]["ports"] == PORT_SET.size()
        assert wan_status["passthrough_effective"] is True
    else:
        assert wan_status["ds_lite"]["aftr"] == softwire.PROVIDER6
        assert wan_status["passthrough_effective"] is False and "AFTR does the NAT" in wan_status["note"]


def test_a_tcp_download_arrives_intact(wan):
    peers = Peers(wan)
    size = 8 * 1024 * 1024
    server = peers.start(wan.server(1), "serve-tcp", 9000, size, 5, 1)
    assert peers.run(wan.client(1), "fetch-tcp", SERVER, 9000).split() == [
        str(size), hashlib.sha256(payload(size, 5)).hexdigest()]
    server.wait(30)
    counters = status(wan)["counters"]
    assert counters["softwire_in"] > size // 1500 and counters["softwire_out"] > 0
    tcp = [s for s in sessions(wan) if s["proto"] == "tcp" and s["remote"] == f"{SERVER}:9000"]
    if wan.wan == "map-e":
        outside_ip, _, port = tcp[0]["outside"].rpartition(":")
        assert outside_ip == softwire.MAP_IPV4 and int(port) in PORT_SET
    else:
        assert tcp == []                               # the B4 translates nothing: no NAT session of its own


def test_openvpn_and_wireguard_from_two_clients_at_once(wan):
    for client in CLIENTS:
        for proto in TUNNELS:
            assert f"{proto} up" in lab_cli("connect", client, proto, "s1").stdout
    for proto in TUNNELS:
        for client in CLIENTS:
            assert "2 received" in lab_cli("ping", client, proto, "-c", "2").stdout
    if wan.wan == "map-e":
        for proto in TUNNELS:
            l4, port = TUNNEL_PORTS[proto]
            flows = [s for s in sessions(wan) if s["proto"] == l4 and s["remote"] == f"{SERVER}:{port}"]
            assert {s["inside"].rpartition(":")[0] for s in flows} == set(CLIENTS.values())
            assert all(int(s["outside"].rpartition(":")[2]) in PORT_SET for s in flows)
    for client in CLIENTS:
        for proto in TUNNELS:
            lab_cli("disconnect", client, proto)


def test_ipsec_nat_t_from_two_clients_under_map_e(map_e):
    for client in CLIENTS:
        assert "ipsec up" in lab_cli("connect", client, "ipsec", "s1").stdout
    for client in CLIENTS:
        assert "2 received" in lab_cli("ping", client, "ipsec", "-c", "2").stdout
    ike = [s for s in sessions(map_e) if s.get("vpn") == "ipsec" and s.get("client") in CLIENTS.values()]
    assert {s["client"] for s in ike} == set(CLIENTS.values())
    for client in CLIENTS:
        lab_cli("disconnect", client, "ipsec")


def test_pptp_is_refused_under_map_e_with_its_reason(map_e):
    before = status(map_e)["counters"]["drop_portless_under_port_set"]
    result = lab_cli("connect", "c1", "pptp", "s1", "--wait", "8", check=False)
    assert result.returncode == 1 and "did not come up" in result.stderr
    assert status(map_e)["counters"]["drop_portless_under_port_set"] > before
    assert "portless_under_port_set" in ctl(map_e, "status")


def test_the_aftr_nat_and_two_pptp_clients(ds_lite):
    """Under DS-Lite the router's PPTP passthrough is not asked: what two PPTP calls to one server get is what
    Linux's NAT44 in the AFTR gives them (with its PPTP helper where the kernel has one)."""
    helper = softwire.aftr_pptp_helper_status()
    assert helper.startswith("nf_conntrack_pptp: the kernel has it"), helper     # the build kernel's, measured
    for client in ("c1", "c2"):
        assert "up through the AFTR (PPP frames came back" in lab_cli("connect", client, "pptp", "s1").stdout
    vpns = VpnLab(ds_lite)
    assert vpns.ppp_flowing("c1", "pptp") and vpns.ppp_flowing("c2", "pptp")    # both calls at once
    assert [s for s in sessions(ds_lite) if s.get("vpn") == "pptp"] == []         # the B4 tracked no call
    assert status(ds_lite)["counters"]["sessions_created"] == 0                   # nor translated anything
    table = ds_lite.run_in(ds_lite.provider, "cat", "/proc/net/nf_conntrack").stdout
    gre = [line for line in table.splitlines() if " gre " in line]
    print(f"AFTR: {helper}; its GRE conntrack entries:\n" + "\n".join(gre))
    assert {"src=192.168.77.11", "src=192.168.77.12"} <= {f for line in gre for f in line.split()}
    for client in ("c1", "c2"):
        lab_cli("disconnect", client, "pptp")


MEASURED = {
    "map-e": {"pptp": "fails", "l2tp": "two", "ipsec": "two", "esp": "fails"},
    "ds-lite": {"pptp": "two", "l2tp": "two", "ipsec": "two", "esp": "one"},
}
"""The README's matrix under each IPv6 WAN: MAP-E's port set refuses the portless; under DS-Lite the AFTR's Linux
NAT44 decides (its PPTP helper tracks two calls; it cannot tell two clients' raw ESP to one gateway apart)."""
TUNNELS_EVERYWHERE = dict.fromkeys(("openvpn", "openvpn-tcp", "wireguard", "openvpn6", "openvpn-tcp6", "wireguard6"),
                                   "two")


def test_lab_check_measures_the_readme_matrix_under_this_wan(wan):
    result = lab_cli("check", "--wan", wan.wan, "--json", "--wait", "8", timeout=900)
    matrix = json.loads(result.stdout)
    assert list(matrix) == [wan.wan]
    assert {kind: entry["result"] for kind, entry in matrix[wan.wan].items()} == MEASURED[wan.wan] | TUNNELS_EVERYWHERE
    if wan.wan == "map-e":
        assert matrix["map-e"]["pptp"]["reason"].startswith("portless under a port set")
    assert json.loads(lab_cli("status", "--json").stdout)["wan"]["mode"] == wan.wan      # the lab as it was
