"""The image: what goes into it, and the image booted under QEMU (`make vm-test`)."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import pytest

from .conftest import ROOT, make, need, run, tail

VM_TEST_TIMEOUT = 20 * 60


def test_wheel_carries_every_package_file():
    """The image installs vpnrouter from a wheel, not from the checkout: every file of the packages must be in it
    (non-Python files such as the dashboard's stylesheet need package data in pyproject.toml)."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "--", "router", "tui"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    wanted = {f for f in listed if "__pycache__" not in f and not f.endswith(".pyc") and (ROOT / f).is_file()}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        for f in sorted(wanted) + ["pyproject.toml", "README.md"]:
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            (src / f).write_bytes((ROOT / f).read_bytes())
        run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", tmp, str(src)],
            timeout=300, check=True)
        wheel = next(Path(tmp).glob("vpnrouter-*.whl"))
        names = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(wanted - names)
    assert not missing, f"files of the checkout missing from the wheel (add them as package data): {missing}"


def test_box_is_a_libvirt_box_with_its_own_kernel(image):
    with tarfile.open(image / "vpnrouter-libvirt.box") as box:
        names = set(box.getnames())
        metadata = json.load(box.extractfile("metadata.json"))
        vagrantfile = box.extractfile("Vagrantfile").read().decode()
    assert {"metadata.json", "box.img", "Vagrantfile", "vmlinuz", "initrd.img"} <= names
    assert metadata["provider"] == "libvirt" and metadata["format"] == "qcow2" and metadata["virtual_size"] >= 1
    for setting in ("lv.kernel", "lv.initrd", "lv.cmd_line"):
        assert setting in vagrantfile
    catalog = json.loads((image / "vpnrouter-libvirt.json").read_text())
    provider = catalog["versions"][-1]["providers"][0]
    assert provider["name"] == "libvirt" and provider["url"] == f"file://{image / 'vpnrouter-libvirt.box'}"


def test_rebuild_reuses_the_cache(image):
    """A second `make image` rebuilds nothing; where the checkout changed in between (someone editing it), only
    the vpnrouter layer: never debootstrap nor the system layer."""
    result = make("image", timeout=600)
    assert result.returncode == 0, tail(result.stdout)
    out = result.stdout
    assert "up to date" in out or ("base: cached" in out and "system: cached" in out), \
        f"a second `make image` rebuilt more than the vpnrouter layer:\n{tail(out)}"


def test_vm_boots_and_passes_the_guest_checks(image):
    """`make vm-test`: the image boots under QEMU (TCG), vpnrouter-lab.service brings the lab up with the kernel's
    peers, and the test unit runs images/vm-test/guest.sh from the 9p share: kernel modules, /dev/ppp, sshd, sudo,
    then a second client per protocol to the same server and 20 pings through each of the six tunnels (PPTP with
    MPPE, L2TP on the kernel's L2TP, IPsec on the kernel's ESP). The router's sessions come back in the share."""
    need("qemu-system-x86_64")
    result = make("vm-test", timeout=VM_TEST_TIMEOUT)
    if result.returncode != 0:
        console = image / "vm-test-console.log"
        pytest.fail(f"make vm-test failed:\n{tail(result.stdout, 80)}\n--- console ---\n"
                    f"{tail(console.read_text(errors='replace')) if console.exists() else '(none)'}")
    assert "guest: " in result.stdout and " 0 failed" in result.stdout
    for check in ("c1 pptp carries traffic", "c2 pptp carries traffic", "c2 l2tp carries traffic",
                  "c3 l2tp carries traffic", "c3 ipsec carries traffic", "c1 ipsec carries traffic",
                  "c1's PPTP call has 128-bit MPPE", "c3's xl2tpd uses the kernel's L2TP",
                  "c1's ESP SAs are in the kernel"):
        assert f"ok    {check}" in result.stdout, f"the guest did not report: {check}"

    sessions = json.loads((image / "vm-test-results" / "sessions.json").read_text())
    flows = [s for s in sessions if s.get("vpn") and s["proto"] in ("gre", "l2tp", "esp")]
    by_vpn = {vpn: [f for f in flows if f["vpn"] == vpn] for vpn in ("pptp", "l2tp", "ipsec")}
    s1, s2 = "198.51.100.10", "198.51.100.20"
    expected = {"pptp": ({"192.168.77.11", "192.168.77.12"}, "server", s1),
                "l2tp": ({"192.168.77.12", "192.168.77.13"}, "lns", None),   # c2 to s1, c3 to s2 (guest.sh)
                "ipsec": ({"192.168.77.11", "192.168.77.13"}, "gateway", s2)}
    for vpn, (clients, server_field, server) in expected.items():
        mine = by_vpn[vpn]
        assert {f["client"] for f in mine} == clients, f"{vpn}: {mine}"
        assert all(f[server_field] == (server or {"192.168.77.12": s1, "192.168.77.13": s2}[f["client"]])
                   and f["state"] == "established" for f in mine), f"{vpn}: {mine}"
        assert all(f["packets_in"] >= 20 and f["packets_out"] >= 20 for f in mine), \
            f"{vpn}: each tunnel carried 20 pings both ways through the router: {mine}"
