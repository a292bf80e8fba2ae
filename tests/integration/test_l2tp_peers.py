"""Real xl2tpd LACs and an xl2tpd LNS through the running router, PPP (LCP from the pppd stand-in) over L2TP.

Every xl2tpd runs with ``force userspace = yes`` and gives its call's PPP to
the stand-in on a pty (router/lab/l2tp.py).  A LAC's stand-in receiving
Echo-Replies means its Echo-Requests crossed the router in L2TP data messages
to the LNS's stand-in and the replies came back: PPP both ways, for that
tunnel and session.

Both modes of ``[l2tp] port`` run, each with a fresh lab and router:

- ``preserve``: both LACs assign the same Tunnel ID (and Session ID), forced
  through their ``/dev/urandom``, and both reach the LNS from UDP port 1701.
  xl2tpd as LNS ignores a second SCCRQ whose Assigned Tunnel ID it already
  has from the same address, whatever the port (control.c, "Peer requested
  tunnel %d twice, ignoring second one"), so the second tunnel comes up only
  if the router rewrote that AVP, as the contract says it does.
- ``translate``: plain NAPT, which by the contract rewrites no Tunnel ID, so
  there the two LACs assign different (fixed) Tunnel IDs: with the same one the
  LNS would ignore the second, exactly as behind Linux's NAT.
"""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

from router.lab.l2tp import ppp_frames, start_lac, start_lns
from router.lab.topology import Lab
from tests.integration.conftest import counters, ctl, lab_for, wait_for

ECHO_REQUEST, ECHO_REPLY = 9, 10
ROUTER_WAN = "198.51.100.1"
SAME_TUNNEL_ID = 4242
# the Tunnel IDs the two LACs of the first test assign, per mode (see the module docstring)
TUNNEL_IDS = {"preserve": (SAME_TUNNEL_ID, SAME_TUNNEL_ID), "translate": (SAME_TUNNEL_ID, SAME_TUNNEL_ID + 1)}
# a third LAC that disconnects: in "preserve" the router must translate its Tunnel ID (c1 and c2 hold 4242)
THIRD_TUNNEL_ID = {"preserve": SAME_TUNNEL_ID, "translate": SAME_TUNNEL_ID + 2}
# later LACs: IDs the LNS has not seen (its tunnels to the LACs stopped while the switch was off linger)
BLOCKED_TUNNEL_ID, ADMITTED_TUNNEL_ID = 4300, 4301
# xl2tpd (control.c) when it accepts a StopCCN: "control_finish: Connection closed to 198.51.100.1, port 1701
# (Goodbye!), Local: 13158, Remote: 4413"
LNS_CLOSED = re.compile(r"Connection closed to ([\d.]+), port (\d+) \(.*\), Local: (\d+), Remote: (\d+)")
PREFIXES = {"preserve": "vl", "translate": "vm"}


class L2tpLab:
    def __init__(self, lab: Lab, base, mode: str):
        self.lab, self.base, self.mode = lab, base, mode
        self.lns = None
        self.lacs: dict[str, object] = {}

    def start_lac(self, key: str, client: int, tunnel_id: int):
        lac = start_lac(self.lab, self.lab.client(client), self.lab.server_ip(1), self.base / key,
                        tunnel_id=tunnel_id)
        self.lacs[key] = lac
        lac.connect()
        return lac

    def stop(self) -> None:
        for daemon in [*self.lacs.values(), self.lns]:
            if daemon is not None:
                daemon.stop()


@pytest.fixture(scope="module", params=["preserve", "translate"])
def l2tp_lab(request, tmp_path_factory):
    if subprocess.run(["which", "xl2tpd"], capture_output=True).returncode:
        pytest.fail("xl2tpd is not installed (make test installs the Debian package xl2tpd)")
    mode = request.param
    with lab_for(PREFIXES[mode], clients=3, servers=1, extra_config=f'[l2tp]\nport = "{mode}"') as lab:
        env = L2tpLab(lab, tmp_path_factory.mktemp(f"l2tp-{mode}"), mode)
        try:
            env.lns = start_lns(lab, lab.server(1), env.base / "lns")
            yield env
        finally:
            env.stop()



def tunnels(lab) -> list[dict]:
    return [s for s in json.loads(ctl(lab, "sessions", "--json")) if s.get("vpn") == "l2tp" and s["proto"] == "l2tp"]


def live_tunnels(lab) -> list[dict]:
    """Tunnels not on their way out (after StopCCN a tunnel stays listed as "stopping" until its ack has crossed)."""
    return [t for t in tunnels(lab) if t["state"] != "stopping"]


def all_established(listed: list[dict], count: int) -> list[dict]:
    """``listed`` if it holds ``count`` tunnels, all established; else []."""
    return listed if len(listed) == count and all(t["state"] == "established" for t in listed) else []




def echo_replies(directory) -> int:
    return sum(1 for f in ppp_frames(directory) if f.get("code") == ECHO_REPLY)


def lns_stand_ins_hearing_echoes(env) -> int:
    """The LNS's stand-ins (one per call) that received Echo-Requests and Echo-Replies from their LAC."""
    count = 0
    for path in (env.base / "lns").glob("ppp-*.log"):
        codes = [json.loads(line).get("code") for line in path.read_text().splitlines() if line.strip()]
        count += codes.count(ECHO_REQUEST) >= 3 and codes.count(ECHO_REPLY) >= 3
    return count


def test_two_lacs_at_once_to_one_lns(l2tp_lab):
    env = l2tp_lab
    lab, lns = env.lab, env.lns
    for i, tunnel_id in zip((1, 2), TUNNEL_IDS[env.mode]):
        env.start_lac(f"c{i}", i, tunnel_id)
    assert wait_for(lambda: all(echo_replies(env.base / f"c{i}") >= 3 for i in (1, 2))), _diagnose(env)
    assert wait_for(lambda: lns_stand_ins_hearing_echoes(env) >= 2), _diagnose(env)

    # each LAC's tunnel and call came up under the Tunnel ID it assigned itself
    for i, tunnel_id in zip((1, 2), TUNNEL_IDS[env.mode]):
        lac = env.lacs[f"c{i}"]
        assert [(p[0], p[1], p[2]) for p in lac.peers()] == [(lab.server_ip(1), 1701, tunnel_id)], lac.log()
        assert len(lac.calls()) == 1, lac.log()
    # the LNS: two tunnels from the router's address, each with its own Tunnel ID for its peer
    established = lns.peers()
    assert len(established) == 2 and {p[0] for p in established} == {ROUTER_WAN}, lns.log()
    assert len({p[3] for p in established}) == 2, f"the LNS sees one peer Tunnel ID for both: {established}"
    assert len(lns.calls()) == 2, lns.log()
    ports = sorted(p[1] for p in established)
    if env.mode == "preserve":
        assert ports == [1701, 1701], f"LNS saw the LACs from ports {ports}"
        # every tunnel request the LNS received came from 1701 too
        assert {port for _, port in lns.tunnel_requests()} == {1701}, lns.log()
    else:
        assert len(set(ports)) == 2, f"LNS saw both LACs from one port: {ports}"

    live = wait_for(lambda: all_established(tunnels(lab), 2), 10) or tunnels(lab)
    assert sorted(t["client"] for t in live) == [lab.client_ip(1), lab.client_ip(2)], live
    assert all(t["state"] == "established" for t in live), live
    assert all(t["lns"] == lab.server_ip(1) for t in live), live
    assert sorted(t["tunnel_id"] for t in live) == sorted(TUNNEL_IDS[env.mode]), live
    assert len({t["translated_tunnel_id"] for t in live}) == 2, live
    # what the router calls the LNS's Tunnel IDs is what the LNS logged as its own
    assert sorted(t["peer_tunnel_id"] for t in live) == sorted(p[2] for p in established), (live, established)
    assert all(len(t["sessions"]) == 1 for t in live), live
    assert all(t["packets_in"] > 0 and t["packets_out"] > 0 for t in live), live
    if env.mode == "preserve":
        # the LNS knows each tunnel by the translated Tunnel ID the router gave it
        assert sorted(t["translated_tunnel_id"] for t in live) == sorted(p[3] for p in established)


def test_a_lac_disconnects_and_the_lns_closes_that_tunnel(l2tp_lab):
    """StopCCN (RFC 2661 §6.4) carries the sender's Assigned Tunnel ID, which xl2tpd checks against the one it
    was given in SCCRQ: where the router translated it, the StopCCN must carry the translated one too."""
    env = l2tp_lab
    lab, lns = env.lab, env.lns
    assert len(live_tunnels(lab)) == 2, "this test needs the first test's two tunnels up"
    tunnel_id = THIRD_TUNNEL_ID[env.mode]
    lac = env.start_lac("c3", 3, tunnel_id)
    assert wait_for(lambda: echo_replies(env.base / "c3") >= 3), _diagnose(env)
    mine = wait_for(lambda: [t for t in all_established(tunnels(lab), 3) if t["client"] == lab.client_ip(3)], 10)
    assert mine, tunnels(lab)
    (tunnel,) = mine
    assert tunnel["tunnel_id"] == tunnel_id
    if env.mode == "preserve":
        assert tunnel["translated_tunnel_id"] != tunnel_id, "c1 and c2 hold this Tunnel ID towards the LNS"
    try:
        _disconnect_one(env, lac, tunnel)
    finally:
        lac.stop()   # a later test starts another LAC in this namespace, on the same port
    # the other two tunnels carry on
    counts = {i: echo_replies(env.base / f"c{i}") for i in (1, 2)}
    assert wait_for(lambda: all(echo_replies(env.base / f"c{i}") > counts[i] for i in (1, 2)), 10), _diagnose(env)


def _disconnect_one(env, lac, tunnel: dict) -> None:
    lab, lns = env.lab, env.lns
    before = counters(lab)
    lac.disconnect()   # xl2tpd sends StopCCN
    assert wait_for(lambda: "Disconnecting from" in lac.log(), 10), lac.log()
    assert wait_for(lambda: len(live_tunnels(lab)) == 2, 10), tunnels(lab)
    assert [t["state"] for t in tunnels(lab) if t["id"] == tunnel["id"]] == ["stopping"]
    assert counters(lab)["l2tp_tunnels_down"] == before["l2tp_tunnels_down"] + 1
    # the LNS accepted the StopCCN for that tunnel, the one it knows by the router's Tunnel ID
    at_lns = [p for p in lns.peers() if p[2] == tunnel["peer_tunnel_id"]]
    assert len(at_lns) == 1 and at_lns[0][3] == tunnel["translated_tunnel_id"], (at_lns, tunnel)
    if env.mode == "preserve":
        assert at_lns[0][1] == 1701
    closed = wait_for(lambda: [tuple(m.groups()) for m in LNS_CLOSED.finditer(lns.log())], 10)
    assert closed == [tuple(map(str, at_lns[0]))], f"router: {tunnel}\nLNS log:\n{lns.log()[-2500:]}"
    # and its acknowledgement (a ZLB to the LAC) was not lost: the LAC would retransmit StopCCN (RFC 2661 §5.7)
    assert not wait_for(lambda: counters(lab)["drop_shared_port_unmatched"] > before["drop_shared_port_unmatched"],
                        3), "the LNS's acknowledgement of the StopCCN was dropped"


def test_switch_off_tears_down_and_blocks_a_new_tunnel_and_on_lets_it_through(l2tp_lab):
    env = l2tp_lab
    lab, lns = env.lab, env.lns
    live = live_tunnels(lab)
    assert live, "no live L2TP tunnel to tear down (the first test brings two up)"
    down_before = counters(lab)["l2tp_tunnels_down"]
    assert ctl(lab, "passthrough", "l2tp", "off").strip() == "l2tp passthrough off"
    assert wait_for(lambda: not tunnels(lab), 5), tunnels(lab)
    assert counters(lab)["l2tp_tunnels_down"] == down_before + len(live)
    # the tunnels are cut: their PPP is refused from now on, and none of it crosses any more
    first = counters(lab)["drop_passthrough_off"]
    assert wait_for(lambda: counters(lab)["drop_passthrough_off"] > first, 10)
    replies = {i: echo_replies(env.base / f"c{i}") for i in (1, 2)}
    later = counters(lab)["drop_passthrough_off"]
    assert wait_for(lambda: counters(lab)["drop_passthrough_off"] >= later + 8, 10)   # the stand-ins keep trying
    assert {i: echo_replies(env.base / f"c{i}") for i in (1, 2)} == replies
    for key in ("c1", "c2"):
        env.lacs[key].stop()

    before = counters(lab)["drop_passthrough_off"]
    requests_before = len(lns.tunnel_requests())
    blocked = env.start_lac("c3-off", 3, BLOCKED_TUNNEL_ID)
    assert wait_for(lambda: counters(lab)["drop_passthrough_off"] > before, 10)
    # give a wrongly admitted tunnel every chance to show up (xl2tpd retransmits its SCCRQ after 1 s, 2 s, ...)
    assert wait_for(lambda: "sending SCCRQ" in blocked.log(), 5), blocked.log()
    time.sleep(3)
    assert len(lns.tunnel_requests()) == requests_before, lns.log()
    assert not tunnels(lab) and blocked.peers() == [] and echo_replies(env.base / "c3-off") == 0
    blocked.stop()

    assert ctl(lab, "passthrough", "l2tp", "on").strip() == "l2tp passthrough on"
    admitted = env.start_lac("c3-on", 3, ADMITTED_TUNNEL_ID)
    assert wait_for(lambda: echo_replies(env.base / "c3-on") >= 3), _diagnose(env)
    assert [p[2] for p in admitted.peers()] == [ADMITTED_TUNNEL_ID], admitted.log()
    live = wait_for(lambda: all_established(tunnels(lab), 1), 10) or tunnels(lab)
    assert [(t["client"], t["tunnel_id"]) for t in live] == [(lab.client_ip(3), ADMITTED_TUNNEL_ID)], tunnels(lab)
    assert len(live[0]["sessions"]) == 1


def _diagnose(env) -> str:
    try:
        sessions = [s for s in json.loads(ctl(env.lab, "sessions", "--json")) if s.get("vpn") == "l2tp"
                    or "1701" in str(s.get("inside", ""))]
    except Exception as exc:   # noqa: BLE001 - a diagnosis never hides the failure it explains
        sessions = f"(ctl failed: {exc})"
    logs = {d.directory.name: d.log()[-1200:] for d in [env.lns, *env.lacs.values()] if d is not None}
    frames = {d.name: len(ppp_frames(d)) for d in env.base.iterdir() if d.is_dir()}
    return f"mode {env.mode}\nsessions: {sessions}\nPPP frames: {frames}\n" + "\n".join(
        f"--- {name}\n{text}" for name, text in logs.items())
