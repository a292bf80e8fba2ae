"""`vpnrouter tui` in a real terminal (tmux) against the real router, with real VPN clients in the lab.

A PPTP call (pptp-linux to pptpd) and an IPsec tunnel (strongSwan, NAT-T) come
up from two clients through `vpnrouter lab`; the dashboard runs in tmux; the
test reads the screen with capture-pane and types with send-keys, and checks
the router's own answer with `ctl status --json`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from router.helpers.registry import helper_classes
from router.lab.topology import STATE_DIR
from tests.integration.conftest import ROOT, cli_lab, wait_for

PREFIX = "vu"
SOCKET = STATE_DIR / PREFIX / "control.sock"
TMUX = "vpnrouter-tui-test"


def vr(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "router", *args], capture_output=True, text=True, timeout=180,
                            cwd=ROOT)
    assert result.returncode == 0, f"vpnrouter {' '.join(args)}: {result.stdout}\n{result.stderr}"
    return result.stdout


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, timeout=30).stdout


def screen() -> str:
    return tmux("capture-pane", "-p", "-t", TMUX)


def switches() -> dict:
    return json.loads(vr("ctl", "--socket", str(SOCKET), "status", "--json"))["passthrough"]


@pytest.fixture(scope="module")
def dashboard():
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed (make test installs the Debian package tmux)")
    with cli_lab(PREFIX):
        try:
            vr("lab", "--prefix", PREFIX, "connect", "c1", "pptp", "s1")
            vr("lab", "--prefix", PREFIX, "connect", "c2", "ipsec", "s1")
            tmux("kill-session", "-t", TMUX)
            # without COLUMNS and LINES (pytest sets them), the app sizes itself to the tmux pane
            command = f"cd {ROOT} && exec env -u COLUMNS -u LINES {sys.executable} -m router tui --socket {SOCKET}"
            tmux("new-session", "-d", "-s", TMUX, "-x", "160", "-y", "48", command)
            tmux("resize-window", "-t", TMUX, "-x", "160", "-y", "48")   # a server started earlier may say 80x24
            yield
        finally:
            tmux("kill-session", "-t", TMUX)


def test_the_screen_shows_both_clients_with_their_call_ids_and_spis(dashboard):
    sessions = json.loads(vr("ctl", "--socket", str(SOCKET), "sessions", "--json"))
    (call,) = [s for s in sessions if s.get("vpn") == "pptp" and s["proto"] == "gre"]
    (sa,) = [s for s in sessions if s.get("vpn") == "ipsec" and s["proto"] == "esp"]
    wanted = ["192.168.77.11", "192.168.77.12", f"{call['call_id']}>{call['translated_call_id']}",
              sa["ike_spi_i"][:8], "NAT-T"]
    assert wait_for(lambda: all(w in screen() for w in wanted), 20), screen()


@pytest.mark.parametrize("key, name, title", [pytest.param(cls.key, cls.name, cls.title, id=f"{cls.key}-{cls.name}")
                                              for cls in helper_classes()])
def test_a_key_turns_its_passthrough_off_and_on_again(dashboard, key, name, title):
    assert wait_for(lambda: "connected" in screen(), 20), screen()
    assert switches()[name] is True
    tmux("send-keys", "-t", TMUX, key)
    assert wait_for(lambda: switches()[name] is False, 10), screen()
    assert wait_for(lambda: f"{title}  OFF" in screen(), 10), screen()
    tmux("send-keys", "-t", TMUX, key)
    assert wait_for(lambda: switches()[name] is True, 10), screen()
    assert wait_for(lambda: f"{title}  ON" in screen(), 10), screen()


def test_q_quits(dashboard):
    tmux("send-keys", "-t", TMUX, "q")
    assert wait_for(lambda: TMUX not in tmux("list-sessions"), 10), screen()
