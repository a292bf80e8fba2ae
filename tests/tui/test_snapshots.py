"""SVG snapshots of the dashboard at 120x40 and 80x24 (pytest-textual-snapshot; --snapshot-update to accept).

Everything that moves is frozen: the dashboard's clocks, the time zone, the
router's uptime and counters (the rates are fed as four fixed readings), and
the socket path (relative, in the test's directory).  The router's settings
show each kind of switch (single with its holder, multi), a NAT profile and
access rules; the events include a profile change and two refused attempts.
One more shows a MAP-E WAN (issue 20) with the VPNs it can carry: a tunnel, a
NAT-T association, and OpenVPN and WireGuard sessions recognised without a helper.
"""

from __future__ import annotations

import time

import pytest
from scapy.layers.inet import IP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from .fake_router import FakeRouter
from .helpers import make_app, wait_for
from .samples import (DEMO_RULES, WAN_MAP_E, demo_table, ipsec_sa, l2tp_tunnel, nat_session, port_set, profile_nat,
                      recognised)

SETTINGS = {"passthrough": {"pptp": True, "l2tp": True, "ipsec": True},
            "passthrough_mode": {"pptp": "single", "l2tp": "multi", "ipsec": "multi"},
            "passthrough_holder": {"pptp": "192.168.77.11", "l2tp": None, "ipsec": None},
            "nat": profile_nat("linux"), "rules": {"default_action": "allow", "count": 2}}
MAP_E_SETTINGS = {**SETTINGS, "passthrough_mode": {"pptp": "multi", "l2tp": "multi", "ipsec": "multi"},
                  "passthrough_holder": {"pptp": None, "l2tp": None, "ipsec": None},
                  "nat": {**profile_nat("linux"), "port_set": port_set(6, 4, 3)}, "wan": WAN_MAP_E}
"""RFC 7597's default offset (6) with a 4-bit PSID: 63 ranges of 64 ports, 4,032."""
MAP_E_TABLE = [l2tp_tunnel(2), ipsec_sa(3), recognised(50, client="192.168.77.11"),
               recognised(51, "openvpn-tcp", client="192.168.77.17", by="port"),
               *(nat_session(i, "tcp" if i % 3 == 0 else "udp") for i in range(6, 14))]
for _session in MAP_E_TABLE:       # the CE's shared address, and NAT sessions' ports in its set (1216 to 1279 first)
    _session["outside"] = (_session["outside"].replace("203.0.113.1", "198.51.100.194") if "vpn" in _session
                           else f"198.51.100.194:{1216 + _session['id']}")
READINGS = [(3724.0, 0, 0, 0, 0), (3725.0, 1200, 900_000, 1100, 1_400_000),
            (3726.0, 3600, 2_100_000, 2500, 3_000_000), (3727.0, 4200, 2_600_000, 4100, 5_200_000)]


@pytest.fixture
def frozen(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    gre = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / \
        IP(src="192.168.77.11", dst="198.51.100.7", proto=47, id=1) / \
        Raw(bytes.fromhex("3081880b0004001100000005" "00000004") + b"ppp!")
    with FakeRouter("ctl.sock", demo_table(), rules=DEMO_RULES) as fake:
        fake.frames[1] = [bytes(gre)] * 2
        yield fake
    monkeypatch.delenv("TZ")
    time.tzset()


def dashboard():
    return make_app("ctl.sock", status_interval=3600.0, capture_dir=".")


async def settle(pilot, settings: dict = SETTINGS) -> None:
    """Wait for the table, then feed fixed counter readings and a few events."""
    app = pilot.app
    await wait_for(pilot, lambda: app.model.synced and app.model.status)
    for uptime, frames_lan, bytes_lan, frames_wan, bytes_wan in READINGS:
        app.model.apply_status({"uptime": uptime, **settings,
                                "counters": {"frames_in_lan": frames_lan, "bytes_in_lan": bytes_lan,
                                             "frames_out_wan": frames_wan, "bytes_out_wan": bytes_wan,
                                             "frames_in_wan": frames_wan // 2, "bytes_in_wan": bytes_wan // 3,
                                             "frames_out_lan": frames_lan // 2, "bytes_out_lan": bytes_lan // 3}},
                               app.clock())
    seq = app.model.expected
    app.model.apply_events([
        {"type": "profile_changed", "seq": seq, "name": "linux", "nat": settings["nat"]},
        {"type": "packet_dropped", "seq": seq + 1, "reason": "passthrough_off", "port": "lan",
         "summary": "gre 192.168.77.15 > 198.51.100.7", "suppressed": 0},
        {"type": "vpn", "seq": seq + 2, "vpn": "ipsec", "event": "esp_ambiguous", "gateway": "198.51.100.9",
         "spi": "c0ffee01", "chosen": "192.168.77.14"},
        {"type": "vpn", "seq": seq + 3, "vpn": "pptp", "event": "refused_single", "client": "192.168.77.12",
         "server": "198.51.100.7", "holder": "192.168.77.11", "suppressed": 0},
        {"type": "vpn", "seq": seq + 4, "vpn": "pptp", "event": "denied", "client": "192.168.77.12",
         "server": "198.51.100.20", "rule": 1, "action": "deny", "suppressed": 0},
    ], app.clock())
    app.refresh_view(force=True)
    await pilot.pause()


def test_dashboard_120x40(frozen, snap_compare):
    assert snap_compare(dashboard(), terminal_size=(120, 40), run_before=settle)


def test_dashboard_80x24(frozen, snap_compare):
    assert snap_compare(dashboard(), terminal_size=(80, 24), run_before=settle)


def test_help_80x24(frozen, snap_compare):
    assert snap_compare(dashboard(), terminal_size=(80, 24), run_before=settle, press=["question_mark"])


def test_details_of_a_pptp_call_120x40(frozen, snap_compare):
    async def open_details(pilot):
        await settle(pilot)
        await pilot.press("shift+tab", "enter")
        await wait_for(pilot, lambda: "last 2 frames" in pilot.app.screen.capture_note)
    assert snap_compare(dashboard(), terminal_size=(120, 40), run_before=open_details)


def test_rules_80x24(frozen, snap_compare):
    frozen.attempt("pptp", "192.168.77.12", "198.51.100.7")          # rule 1 denies it
    for _ in range(3):
        frozen.attempt("ipsec", "192.168.77.13", "198.51.100.9")     # rule 2 allows it

    async def open_rules(pilot):
        await settle(pilot)
        await pilot.press("r")
        await wait_for(pilot, lambda: pilot.app.screen.shown is not None)
    assert snap_compare(dashboard(), terminal_size=(80, 24), run_before=open_rules)


def test_map_e_with_recognised_vpns_120x50(frozen, snap_compare):
    frozen.sessions = {s["id"]: s for s in MAP_E_TABLE}

    async def map_e(pilot):
        await settle(pilot, MAP_E_SETTINGS)
    assert snap_compare(dashboard(), terminal_size=(120, 50), run_before=map_e)
