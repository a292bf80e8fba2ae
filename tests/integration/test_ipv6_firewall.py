"""RFC 6092's firewall, on real stacks: a server's unsolicited IPv6 reaches no LAN host, until the IPv6 IPsec
switch (`vpnrouter ctl ipv6 ipv6_ipsec on`) lets ESP and IKE in, and nothing else; off again, they stop."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from router.lab.topology import client_ipv6
from tests.integration.conftest import ROOT, ctl, wan_lab

LISTEN = """
import socket, sys, select, time
proto, port, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
if proto == 17:
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.bind(("::", port))
else:
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, proto)
print("ready", flush=True)
count, end = 0, time.monotonic() + seconds
while (left := end - time.monotonic()) > 0:
    if select.select([s], [], [], left)[0]:
        s.recv(2048); count += 1
print(count, flush=True)
"""
SEND = """
import socket, sys
proto, port, to, n = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
if proto == 17:         # from any port: the server's own IKE daemon holds 500
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
else:
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, proto)
for i in range(n):
    s.sendto(bytes.fromhex("00001000") + (i + 1).to_bytes(4, "big") + bytes(24), (to, port))
"""
ESP, UDP = 50, 17


@pytest.fixture(scope="module")
def lab():
    with wan_lab("vf", "map-e") as (lab, _):
        yield lab


def unsolicited(lab, proto: int, port: int, count: int = 5) -> int:
    """How many of ``count`` packets s1 sends to c1's IPv6 address unasked reach c1."""
    address = client_ipv6(lab, 1)
    listener = lab.popen_in(lab.client(1), sys.executable, "-c", LISTEN, str(proto), str(port), "3",
                            stdout=subprocess.PIPE, text=True)
    assert listener.stdout.readline().strip() == "ready"
    lab.run_in(lab.server(1), sys.executable, "-c", SEND, str(proto), str(port), address, str(count))
    received = int(listener.communicate(timeout=30)[0].strip())
    return received


def switch(lab, value: str) -> str:
    command = [sys.executable, "-m", "router", "ctl", "--socket", str(lab.socket_path), "ipv6", "ipv6_ipsec", value]
    return subprocess.run(command, capture_output=True, text=True, timeout=30, cwd=ROOT, check=True).stdout


def counters(lab) -> dict:
    return json.loads(ctl(lab, "status", "--json"))["counters"]


def test_unsolicited_ipv6_reaches_no_lan_host_until_the_ipsec_switch_lets_esp_in(lab):
    dropped = counters(lab)["drop_ipv6_unsolicited"]
    assert unsolicited(lab, ESP, 0) == 0
    assert unsolicited(lab, UDP, 500) == 0
    assert counters(lab)["drop_ipv6_unsolicited"] >= dropped + 10
    assert "ipv6_ipsec on" in switch(lab, "on")
    assert unsolicited(lab, ESP, 0) == 5
    assert unsolicited(lab, UDP, 500) == 5
    assert unsolicited(lab, UDP, 5353) == 0                       # the switch opens IPsec's doors, no other
    sessions = json.loads(ctl(lab, "sessions", "--json"))
    assert {s["state"] for s in sessions if s.get("family") == "ipv6" and s["proto"] in ("esp", "udp")} == {"admitted"}
    switch(lab, "off")
    assert unsolicited(lab, ESP, 0) == 0
    status = json.loads(ctl(lab, "status", "--json"))["wan"]
    assert status["ipv6_switches"] == {"ipv6_ipsec": False}


def test_what_a_lan_host_sends_opens_the_way_back(lab):
    address = client_ipv6(lab, 1)
    server = "2001:db8:5::10"
    reply = lab.run_in(lab.client(1), "ping", "-6", "-c", "2", "-W", "2", server).stdout
    assert "2 received" in reply
    sessions = json.loads(ctl(lab, "sessions", "--json"))
    assert any(s.get("family") == "ipv6" and s["inside"].startswith(f"[{address}]") and s["proto"] == "icmp"
               for s in sessions)
