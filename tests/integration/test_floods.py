"""Floods through the running router (issue 12): one LAN host opening flows as fast as it can meets its
per-host limit, and the other hosts keep working."""

from __future__ import annotations

import hashlib
import json
import subprocess

import pytest

from tests.integration.conftest import ROOT, Peers, ctl, lab_for
from tests.integration.peers import payload

S1 = "198.51.100.10"
C1, C2 = "192.168.77.11", "192.168.77.12"
PER_HOST = 2000
FLOOD = 60_000
DOWNLOAD = 16 * 1024 * 1024


@pytest.fixture(scope="module")
def lab():
    with lab_for("vf", clients=2, servers=1, extra_config=f"[limits]\nsessions_per_host = {PER_HOST}\n") as lab:
        yield lab


def test_a_host_flooding_new_flows_meets_its_limit_and_the_others_keep_working(lab):
    peers = Peers(lab)
    server = peers.start("vf-s1", "serve-tcp", 9000, DOWNLOAD, 5, 1)
    echo = peers.start("vf-s1", "udp-echo", 7, 1)
    fetch = lab.popen_in("vf-c2", *peers.cmd("fetch-tcp", S1, 9000, 4 * 1024 * 1024), cwd=ROOT,
                         stdout=subprocess.PIPE, text=True)      # four seconds of download, through the flood
    before = json.loads(ctl(lab, "status", "--json"))["counters"]
    flood = peers.run("vf-c1", "udp-flood", S1, 9, FLOOD, timeout=300)
    answer = peers.run("vf-c2", "udp-ask", S1, 7)                # a new flow from the other host, after it
    out, _ = fetch.communicate(timeout=120)
    server.wait(30)
    echo.wait(30)
    status = json.loads(ctl(lab, "status", "--json"))
    sessions = json.loads(ctl(lab, "sessions", "--json"))
    per_host = {ip: sum(1 for s in sessions if s["inside"].startswith(ip + ":")) for ip in (C1, C2)}
    assert flood == str(FLOOD)
    assert per_host[C1] == PER_HOST                              # the limit, not one more
    assert status["counters"]["drop_session_limit"] - before["drop_session_limit"] > FLOOD // 4
    assert out.split() == [str(DOWNLOAD), hashlib.sha256(payload(DOWNLOAD, 5)).hexdigest()]
    assert answer == "echo:hello:198.51.100.1"                  # a new flow of its own, there and back
    assert per_host[C2] == 2                                     # the download and that new flow
