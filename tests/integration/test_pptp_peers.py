"""Real pptp-linux clients and pptpd through the running router, PPP (LCP from the pppd stand-in) over GRE.

pptpd gives each call to the stand-in on a pty; each pptp client runs with
the stand-in on its line.  A client's stand-in receiving Echo-Replies means
its Echo-Requests crossed GRE to the server's stand-in and the replies came
back: PPP both ways, for that call.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from router.lab.pptp import ppp_frames, start_pptp_client, start_pptpd
from tests.integration.conftest import ctl, lab_for, wait_for

SERVER = "198.51.100.10"
ECHO_REPLY = 10


@pytest.fixture(scope="module")
def pptp_lab(tmp_path_factory):
    for tool in ("pptpd", "pptp"):
        if subprocess.run(["which", tool], capture_output=True).returncode:
            pytest.fail(f"{tool} is not installed (make test installs the Debian packages pptpd and pptp-linux)")
    base = tmp_path_factory.mktemp("pptp")
    procs = []
    with lab_for("vp", clients=4, servers=1) as lab:
        try:
            procs.append(start_pptpd(lab, lab.server(1), base / "server"))
            yield lab, base, procs
        finally:
            for proc in procs:
                proc.terminate()



def calls(lab) -> list[dict]:
    return [s for s in json.loads(ctl(lab, "sessions", "--json")) if s.get("vpn") == "pptp" and s["proto"] == "gre"]



def echo_replies(directory) -> int:
    return sum(1 for f in ppp_frames(directory) if f.get("code") == ECHO_REPLY)


def test_two_clients_then_a_third_to_one_server(pptp_lab):
    lab, base, procs = pptp_lab
    for i in (1, 2):
        procs.append(start_pptp_client(lab, lab.client(i), SERVER, base / f"c{i}"))
    assert wait_for(lambda: all(echo_replies(base / f"c{i}") >= 3 for i in (1, 2))), _diagnose(lab, base)
    procs.append(start_pptp_client(lab, lab.client(3), SERVER, base / "c3"))
    assert wait_for(lambda: all(echo_replies(base / f"c{i}") >= 3 for i in (1, 2, 3))), _diagnose(lab, base)
    live = calls(lab)
    assert sorted(c["client"] for c in live) == [lab.client_ip(i) for i in (1, 2, 3)]
    assert len({c["translated_call_id"] for c in live}) == 3
    assert all(c["state"] == "established" and c["packets_in"] > 0 and c["packets_out"] > 0 for c in live)
    # each call's PPP reached the server side too: one stand-in per call there, each hearing its client
    server_logs = [p for p in (base / "server").glob("ppp-*.log") if p.read_text().count('"code": 9')]
    assert len(server_logs) >= 3


def test_switch_off_blocks_a_new_call_and_on_lets_it_through(pptp_lab):
    lab, base, procs = pptp_lab
    assert ctl(lab, "passthrough", "pptp", "off").strip() == "pptp passthrough off"
    assert wait_for(lambda: not calls(lab), 5)
    before = json.loads(ctl(lab, "status", "--json"))["counters"]["drop_passthrough_off"]
    blocked = start_pptp_client(lab, lab.client(4), SERVER, base / "c4-off")
    procs.append(blocked)
    assert wait_for(lambda: json.loads(ctl(lab, "status", "--json"))["counters"]["drop_passthrough_off"] > before, 10)
    time.sleep(3)   # give a wrongly admitted call every chance to show up
    assert not calls(lab) and echo_replies(base / "c4-off") == 0
    blocked.terminate()
    blocked.wait(10)
    ctl(lab, "passthrough", "pptp", "on")
    procs.append(start_pptp_client(lab, lab.client(4), SERVER, base / "c4-on"))
    assert wait_for(lambda: echo_replies(base / "c4-on") >= 3), _diagnose(lab, base)
    assert [c["client"] for c in calls(lab)].count(lab.client_ip(4)) == 1


def _diagnose(lab, base) -> str:
    outs = {p.parent.name + "/" + p.name: p.read_text()[-400:] for p in base.glob("*/*.out")}
    return f"calls: {calls(lab)}\nPPP frames: { {d.name: len(ppp_frames(d)) for d in base.iterdir()} }\n{outs}"
