"""IPsec passthrough (issue 6) through the running router: real strongSwan peers, and synthetic raw ESP.

strongSwan runs with kernel-libipsec (ESP in userspace; this kernel has no
ESP), so behind the router its tunnels are IKEv2 with NAT-T: IKE_SA_INIT on
UDP 500, then IKE and ESP in UDP 4500.  A client pinging the gateway's inner
address from its virtual IP proves ESP crossed the router both ways.  Raw
ESP (IP protocol 50), which strongSwan 5.9.8 cannot send from behind a NAT,
comes from tests/integration/esp_peers.py over raw sockets.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from router.lab import ipsec
from router.lab.topology import ROUTER_WAN, Lab
from tests.integration.conftest import ROOT, counters, ctl, lab_for, wait_for

GATEWAY = Lab.server_ip(1)
MODES = ("preserve", "translate")


def require_tools(*tools: str) -> None:
    for tool in tools:
        if not (os.access(tool, os.X_OK) if tool.startswith("/") else shutil.which(tool)):
            pytest.fail(f"{tool} is not installed (make test installs the Debian packages strongswan-charon, "
                        "strongswan-swanctl, libcharon-extra-plugins, libstrongswan-standard-plugins, "
                        "libstrongswan-extra-plugins and tcpdump)")


@pytest.fixture(scope="module", params=MODES)
def vpn_lab(request, tmp_path_factory):
    """A fresh lab and router per ike_port mode, with a strongSwan gateway and a capture of its IKE."""
    require_tools(ipsec.CHARON, "swanctl", "tcpdump")
    mode = request.param
    base = tmp_path_factory.mktemp(f"ipsec-{mode}")
    with lab_for(f"vi{mode[0]}", clients=3, servers=1, extra_config=f'[ipsec]\nike_port = "{mode}"\n') as lab:
        state = {"mode": mode, "lab": lab, "base": base, "charons": [], "capture": None}
        try:
            state["capture"] = ipsec.start_capture(lab, lab.server(1), base / "gateway.pcap")
            state["gateway"] = ipsec.start_gateway(lab, lab.server(1), base / "gw", address=GATEWAY)
            state["charons"].append(state["gateway"])
            yield state
        finally:
            for charon in state["charons"]:
                charon.stop()
            if state["capture"] is not None:
                ipsec.stop_capture(state["capture"])



def sessions(lab: Lab) -> list[dict]:
    return json.loads(ctl(lab, "sessions", "--json"))


def associations(lab: Lab) -> list[dict]:
    return [s for s in sessions(lab) if s.get("vpn") == "ipsec" and s["proto"] == "esp"]




def start_client(state: dict, i: int, tag: str = "") -> ipsec.Charon:
    lab = state["lab"]
    client = ipsec.start_client(lab, lab.client(i), state["base"] / f"c{i}{tag}", gateway=GATEWAY,
                                identity=f"client{i}{tag}@lab")
    state["charons"].append(client)
    return client


def one(value):
    """A contract field that may be a list after rekeys: here there were none, so exactly one string."""
    assert isinstance(value, str), value
    return value


# -- 1. two real tunnels to one gateway at once ---------------------------------------------------------

def test_two_strongswan_clients_to_one_gateway(vpn_lab):
    lab, mode, gateway = vpn_lab["lab"], vpn_lab["mode"], vpn_lab["gateway"]
    clients = [start_client(vpn_lab, i) for i in (1, 2)]
    # initiated together, so that both IKE_SA_INIT exchanges are in flight at once (in "preserve" mode both
    # leave from outside port 500 and the router must tell the gateway's answers apart by their SPIs)
    with ThreadPoolExecutor(2) as pool:
        sas = list(pool.map(ipsec.connect, clients))
    for client, sa in zip(clients, sas):
        assert sa["nat-local"] == "yes", sa    # the client saw the router's NAT, so IKE floated to 4500
        assert client.virtual_ip(), sa
    assert clients[0].virtual_ip() != clients[1].virtual_ip()
    # both tunnels at once: every ping from each client's virtual IP crosses its own tunnel both ways
    for client in clients:
        result = ipsec.ping(lab, client, count=5)
        assert result.returncode == 0 and " 0% packet loss" in result.stdout, (result.stdout, result.stderr)
    for client, sa in zip(clients, sas):
        child = client.established()[0]["child-sas"][0]
        assert int(child["packets-in"]) >= 5 and int(child["packets-out"]) >= 5, child
    # the gateway holds both IKE SAs, each from the router's WAN address
    on_gateway = {sa["initiator-spi"]: sa for sa in gateway.established()}
    for sa in sas:
        assert sa["initiator-spi"] in on_gateway, (sa, on_gateway)
        assert on_gateway[sa["initiator-spi"]]["remote-host"] == ROUTER_WAN
        assert on_gateway[sa["initiator-spi"]]["responder-spi"] == sa["responder-spi"]

    # where each client's IKE_SA_INIT came from, as the gateway received it
    requests = ipsec.ike_sa_init_requests(vpn_lab["base"] / "gateway.pcap")
    ports = {sa["initiator-spi"]: {r["sport"] for r in requests if r["ike_spi_i"] == sa["initiator-spi"]
                                   and r["source"] == ROUTER_WAN and r["dport"] == 500} for sa in sas}
    assert all(ports.values()), (ports, requests)
    if mode == "preserve":
        assert ports == {sa["initiator-spi"]: {500} for sa in sas}, ports
    else:
        # plain NAPT: whichever client's IKE came first kept port 500, the other's left from another port
        assert sorted(len(p) for p in ports.values()) == [1, 1], ports
        assert sorted(p == {500} for p in ports.values()) == [False, True], ports

    # the router's view: one association per client, with the SPIs strongSwan negotiated
    by_client = {a["client"]: a for a in associations(lab)}
    for i, client, sa in zip((1, 2), clients, sas):
        assoc = by_client.get(lab.client_ip(i))
        assert assoc, by_client
        child = client.established()[0]["child-sas"][0]
        assert assoc["inside"].split(":")[0] == lab.client_ip(i) and assoc["remote"].split(":")[0] == GATEWAY
        assert assoc["gateway"] == GATEWAY
        assert one(assoc["ike_spi_i"]) == sa["initiator-spi"], (assoc, sa)
        assert one(assoc["ike_spi_r"]) == sa["responder-spi"], (assoc, sa)
        assert one(assoc["esp_spi_out"]) == child["spi-out"], (assoc, child)
        assert one(assoc["esp_spi_in"]) == child["spi-in"], (assoc, child)
        assert assoc["natt"] is True and assoc["ambiguous"] is False
        assert assoc["state"] == "established", assoc
        assert assoc["packets_in"] >= 5 and assoc["packets_out"] >= 5, assoc
        ike_ports = [p for p in assoc["ports"] if p["inside"] == 500 and p["remote"] == 500]
        # its IKE session's outside port is the one the gateway saw (500 for both in "preserve" mode)
        assert len(ike_ports) == 1 and {ike_ports[0]["outside"]} == ports[sa["initiator-spi"]], (assoc, ports)
    # the UDP sessions carry the association's SPIs too
    udp = [s for s in sessions(lab) if s.get("vpn") == "ipsec" and s["proto"] == "udp"]
    for sa in sas:
        ike = [s for s in udp if s.get("ike_spi_i") == sa["initiator-spi"]]
        assert ike and all(s.get("ike_spi_r") == sa["responder-spi"] for s in ike), udp
    assert counters(lab)["ipsec_ike_ambiguous"] == 0


def test_child_rekey_keeps_the_tunnel_and_lists_both_spi_pairs(vpn_lab):
    lab = vpn_lab["lab"]
    client = next(c for c in vpn_lab["charons"] if c.ns == lab.client(1))
    old = client.established()[0]["child-sas"][0]
    client.swanctl("--rekey", "--child", client.name)
    result = ipsec.ping(lab, client, count=3)
    assert result.returncode == 0 and " 0% packet loss" in result.stdout, (result.stdout, result.stderr)
    new = [c for c in client.established()[0]["child-sas"] if c["spi-in"] != old["spi-in"]]
    assert new and int(new[0]["packets-in"]) >= 3, client.list_sas()
    assoc = next(a for a in associations(lab) if a["client"] == lab.client_ip(1))
    # ESP in UDP under both SPI pairs crossed the router: each direction now lists both
    assert sorted(assoc["esp_spi_out"]) == sorted([old["spi-out"], new[0]["spi-out"]]), (assoc, old, new)
    assert sorted(assoc["esp_spi_in"]) == sorted([old["spi-in"], new[0]["spi-in"]]), (assoc, old, new)
    assert assoc["state"] == "established" and assoc["ambiguous"] is False


# -- 2. the switch -------------------------------------------------------------------------------------

def test_switch_off_blocks_a_new_tunnel_and_on_lets_one_through(vpn_lab):
    lab = vpn_lab["lab"]
    assert ctl(lab, "passthrough", "ipsec", "off").strip() == "ipsec passthrough off"
    assert wait_for(lambda: not associations(lab), 5), associations(lab)
    before = counters(lab)["drop_passthrough_off"]
    pcap = vpn_lab["base"] / "gateway.pcap"
    seen = len(ipsec.ike_sa_init_requests(pcap))
    blocked = start_client(vpn_lab, 3, "-off")
    result = blocked.initiate(timeout=30, check=False)
    assert result.returncode != 0, result.stdout
    # charon gave up after its retransmissions: none of them reached the gateway
    assert len(ipsec.ike_sa_init_requests(pcap)) == seen, ipsec.ike_sa_init_requests(pcap)[seen:]
    assert not blocked.established()
    assert counters(lab)["drop_passthrough_off"] > before
    assert not [a for a in associations(lab) if a["client"] == lab.client_ip(3)]
    assert not [sa for sa in vpn_lab["gateway"].established() if sa.get("remote-id") == "client3-off@lab"]
    blocked.stop()

    assert ctl(lab, "passthrough", "ipsec", "on").strip() == "ipsec passthrough on"
    admitted = start_client(vpn_lab, 3, "-on")
    sa = ipsec.connect(admitted)
    result = ipsec.ping(lab, admitted, count=3)
    assert result.returncode == 0 and " 0% packet loss" in result.stdout, (result.stdout, result.stderr)
    assocs = [a for a in associations(lab) if a["client"] == lab.client_ip(3)]
    assert len(assocs) == 1 and one(assocs[0]["ike_spi_i"]) == sa["initiator-spi"], assocs


# -- 3. raw ESP from three clients to one gateway ---------------------------------------------------------

@pytest.fixture(scope="module")
def esp_lab():
    with lab_for("ve", clients=3, servers=1) as lab:
        yield lab


class EspPeer:
    """One tests/integration/esp_peers.py process in a namespace, driven line by line on stdin."""

    def __init__(self, lab: Lab, ns: str, *args: str):
        self.proc = lab.popen_in(ns, sys.executable, "-m", "tests.integration.esp_peers", *args, cwd=ROOT,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        assert line == "ready", (line, self.proc.stderr.read() if self.proc.poll() is not None else "")

    def ask(self, command: str) -> str:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def count(self) -> int:
        return int(self.ask("count"))

    def report(self) -> dict:
        report = json.loads(self.ask("report"))
        self.proc.wait(10)
        return report

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_raw_esp_three_clients_one_gateway(esp_lab):
    lab = esp_lab
    out_spis = {i: 0xC1000000 + i for i in (1, 2, 3)}      # client i -> gateway
    in_spis = {i: 0x5E000000 + 0x100 * i for i in (1, 2, 3)}  # gateway -> client i
    before = counters(lab)
    peers = []
    try:
        responder = EspPeer(lab, lab.server(1), "responder",
                            *(f"{out_spis[i]:08x}:{in_spis[i]:08x}" for i in (1, 2, 3)))
        peers.append(responder)
        clients = {}
        # pairs one after another: each client's first reply is the unknown SPI paired with it
        for i in (1, 2, 3):
            clients[i] = EspPeer(lab, lab.client(i), "client", GATEWAY, f"{out_spis[i]:08x}")
            peers.append(clients[i])
            clients[i].ask("send 1")
            assert wait_for(lambda: clients[i].count() >= 1, 10), (i, associations(lab), counters(lab))
        # then traffic interleaved
        rounds = 10
        for _ in range(rounds):
            for i in (1, 2, 3):
                clients[i].ask("send 1")
        assert wait_for(lambda: all(c.count() >= 1 + rounds for c in clients.values()), 20), \
            ({i: c.count() for i, c in clients.items()}, counters(lab))
        assocs = {a["client"]: a for a in associations(lab)}
        reports = {i: c.report() for i, c in clients.items()}
        gateway = responder.report()
    finally:
        for peer in peers:
            peer.close()
    for i, report in reports.items():
        # every reply to client i, and only those, reached client i, intact
        assert report["received"] == {f"{in_spis[i]:08x}": 1 + rounds}, (i, reports)
        assert report["bad"] == 0
        assert sorted(report["payloads"][f"{in_spis[i]:08x}"]) == \
            sorted(f"reply:c{out_spis[i]:08x}:{n}" for n in range(1, 2 + rounds))
    assert gateway["received"] == {f"{out_spis[i]:08x}": 1 + rounds for i in (1, 2, 3)}, gateway
    assert gateway["bad"] == 0
    for i in (1, 2, 3):
        assoc = assocs.get(lab.client_ip(i))
        assert assoc, assocs
        assert assoc["gateway"] == GATEWAY and assoc["natt"] is False and assoc["ambiguous"] is False, assoc
        assert one(assoc["esp_spi_out"]) == f"{out_spis[i]:08x}", assoc
        assert one(assoc["esp_spi_in"]) == f"{in_spis[i]:08x}", assoc
        assert assoc["state"] == "established", assoc
        assert assoc["packets_out"] == 1 + rounds and assoc["packets_in"] == 1 + rounds, assoc
    after = counters(lab)
    assert after["ipsec_esp_ambiguous"] == before["ipsec_esp_ambiguous"]
    assert after["drop_esp_no_association"] == before["drop_esp_no_association"]
    assert after["drop_esp_malformed"] == before["drop_esp_malformed"]
