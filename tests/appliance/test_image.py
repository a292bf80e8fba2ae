"""The image: what goes into it, and the image booted under QEMU (`make vm-test`)."""

from __future__ import annotations

import json
import re
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
    (non-Python files such as the dashboard's stylesheet need package data in pyproject.toml), and the fast path
    compiled, where its C sources stay behind."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "--", "router", "tui"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    wanted = {f for f in listed if "__pycache__" not in f and not f.endswith((".pyc", ".so")) and (ROOT / f).is_file()}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        for f in sorted(wanted) + ["pyproject.toml", "setup.py", "README.md"]:    # as images/build.sh copies them
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            (src / f).write_bytes((ROOT / f).read_bytes())
        run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", tmp, str(src)],
            timeout=300, check=True)
        wheel = next(Path(tmp).glob("vpnrouter-*.whl"))
        names = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(f for f in wanted - names if not f.endswith((".c", ".h")))
    assert not missing, f"files of the checkout missing from the wheel (add them as package data): {missing}"
    assert any(n.startswith("router/fastpath/_flowcache.") and n.endswith(".so") for n in names), sorted(names)


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


@pytest.fixture(scope="module")
def vm_test(image) -> subprocess.CompletedProcess:
    """`make vm-test`, once for the tests below: what it printed and its exit status (each test judges its part)."""
    need("qemu-system-x86_64", "qemu-img")
    return make("vm-test", timeout=VM_TEST_TIMEOUT)


def boot_outputs(stdout: str) -> dict[int, str]:
    """What guest.sh printed in each boot, as vm-test.sh shows it ("----- output of guest.sh in the VM (boot N)")."""
    found = re.findall(r"^----- output of \S+ in the VM \(boot (\d+)\) -----\n(.*?)^-----$", stdout, re.M | re.S)
    return {int(n): text for n, text in found}


def test_vm_boots_and_passes_the_guest_checks(image, vm_test):
    """`make vm-test`: the image boots under QEMU (TCG), vpnrouter-lab.service brings the lab up with the kernel's
    peers, and the test unit runs images/vm-test/guest.sh from the 9p share: kernel modules, /dev/ppp, sshd, sudo,
    then a second client per protocol to the same server and 20 pings through each of the six tunnels (PPTP with
    MPPE, L2TP on the kernel's L2TP, IPsec on the kernel's ESP), then WireGuard (the kernel's) and OpenVPN over UDP
    and TCP from two clients to one server. The router's sessions come back in the share."""
    result = vm_test
    if result.returncode != 0:
        console = image / "vm-test-console.log"
        pytest.fail(f"make vm-test failed:\n{tail(result.stdout, 80)}\n--- console ---\n"
                    f"{tail(console.read_text(errors='replace')) if console.exists() else '(none)'}")
    outputs = boot_outputs(result.stdout)
    assert sorted(outputs) == [1, 2], f"guest.sh's output of boots 1 and 2 wanted: {sorted(outputs)}"
    for n, text in outputs.items():
        assert re.search(r"^guest: \d+ passed, 0 failed$", text, re.M), f"boot {n}:\n{tail(text)}"
    for check in ("c1 pptp carries traffic", "c2 pptp carries traffic", "c2 l2tp carries traffic",
                  "c3 l2tp carries traffic", "c3 ipsec carries traffic", "c1 ipsec carries traffic",
                  "c1's PPTP call has 128-bit MPPE", "c3's xl2tpd uses the kernel's L2TP",
                  "c1's ESP SAs are in the kernel", "c1 wireguard carries traffic", "c2 wireguard carries traffic",
                  "c2 openvpn carries traffic", "c1 openvpn-tcp carries traffic", "c2's WireGuard is the kernel's"):
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


STATE_FILE = "/var/lib/vpnrouter/router.state"
LAN_HOST, WAN_HOST, ROUTER_WAN = "192.168.77.10", "198.51.100.10", "198.51.100.1"


def results(image: Path, stdout: str):
    """A reader of what the VM test left in images/out/vm-test-results/ (images/vm-test/state.sh)."""
    directory = image / "vm-test-results"

    def read(name: str):
        path = directory / name
        if not path.is_file():
            pytest.fail(f"the VM test left no {name} in {directory} (it did not get that far):\n{tail(stdout, 60)}")
        text = path.read_text(errors="replace")
        if name.endswith(".json"):
            try:
                return json.loads(text)
            except ValueError:
                pytest.fail(f"{name} is not JSON: {text[:2000]}")
        return text
    return read


def flows_of(sessions: list[dict], where: str) -> tuple[dict, dict]:
    """The UDP flow (192.168.77.10:40000 -> 198.51.100.10:7000) and the TCP connection (to port 7001) of the test,
    one session each."""
    udp = [s for s in sessions if s["proto"] == "udp" and s["inside"] == f"{LAN_HOST}:40000"
           and s["remote"] == f"{WAN_HOST}:7000"]
    tcp = [s for s in sessions if s["proto"] == "tcp" and s["inside"].startswith(f"{LAN_HOST}:")
           and s["remote"] == f"{WAN_HOST}:7001"]
    assert len(udp) == 1 and len(tcp) == 1, f"{where}: one UDP and one TCP session wanted: {sessions}"
    return udp[0], tcp[0]


def assert_same(old: dict, new: dict, where: str) -> None:
    for key in ("id", "proto", "inside", "outside", "remote"):
        assert new[key] == old[key], f"{where}: {key} {old[key]!r} became {new[key]!r}: {old} -> {new}"


def written_lines(journal: str) -> list[tuple[float, int]]:
    """(time, sessions) of each "state file ...: N sessions written" line of a journal (-o short-unix)."""
    return [(float(t), int(n)) for t, n in
            re.findall(rf"^(\d+\.\d+) .*state file {re.escape(STATE_FILE)}: (\d+) sessions written$", journal, re.M)]


def test_vm_router_keeps_its_sessions_across_restart_and_reboot(image, vm_test):
    """vpnrouter.service with the appliance's [state] file (images/vm-test/state.sh): sessions made through it (a
    UDP flow, a TCP connection) are taken up with their ids by the router that `systemctl restart` starts, and
    carry traffic from the WAN host to the LAN host that arrived only after the restart; the guest then powers off
    cleanly (systemd stops vpnrouter.service, which writes the file), the same disk boots again, vpnrouter.service
    starts and takes the same sessions up again, and a datagram from the (new) WAN host on the restored UDP flow
    reaches the (new, another MAC) LAN host and its answer gets back."""
    stdout = vm_test.stdout
    read = results(image, stdout)
    outputs = boot_outputs(stdout)
    for n, header, wanted in ((1, "keeps its tables across systemctl restart",
                               ("vpnrouter.service has StateDirectory=vpnrouter, mode 0700",
                           "router.toml names the state file", "the image does not enable vpnrouter.service",
                           "systemctl restart vpnrouter.service",
                           "this boot ends with a clean poweroff")),
                              (2, "keeps its tables across a reboot",
                               ("vpnrouter.service is active after the reboot",
                                "the first boot's journal: vpnrouter.service stopped at poweroff and wrote the state "
                                "file"))):
        text = outputs.get(n, "")
        assert f"vpnrouter.service {header}" in text, \
            f"boot {n}: no state checks in guest.sh's output:\n{tail(stdout, 60)}"
        text = text[text.index(f"vpnrouter.service {header}"):]     # the state checks of this boot
        for check in wanted:
            assert f"ok    {check}" in text, f"boot {n}: the guest did not report: {check}\n{tail(text, 60)}"
        failed = [line for line in text.splitlines() if line.startswith("FAIL")]
        assert not failed, f"boot {n}: state checks failed in the guest: {failed}\n{tail(text, 60)}"

    # The first start: the appliance's state file, nothing in it yet.
    start = read("state-status-start.json")["state"]
    assert start["file"] == STATE_FILE and start["restored"] is None and start["refused"] is None, start

    # systemctl restart: the same sessions, with their ids, and they carried what came after.
    udp0, tcp0 = flows_of(read("state-sessions-before.json"), "before the restart")
    assert tcp0["state"] == "established", tcp0
    restart = read("state-status-restart.json")["state"]
    assert restart["file"] == STATE_FILE and restart["refused"] is None and not restart["fresh"], restart
    restored = restart["restored"]
    assert restored is not None, f"the router started by systemctl restart restored nothing: {restart}"
    assert restored["counts"].get("mapping", 0) >= 2 and restored["counts"].get("session", 0) >= 2, restored
    assert restored["dropped"] == [], restored
    assert 0 <= restored["age"] < 60, f"the file restored at the restart was not the one just written: {restored}"
    udp1, tcp1 = flows_of(read("state-sessions-restart.json"), "after the restart")
    assert_same(udp0, udp1, "UDP, systemctl restart")
    assert_same(tcp0, tcp1, "TCP, systemctl restart")
    assert tcp1["state"] == "established", tcp1
    assert udp1["packets_in"] > udp0["packets_in"] and tcp1["packets_in"] > tcp0["packets_in"], \
        f"nothing came in on the restored sessions after the restart: {udp0} -> {udp1}, {tcp0} -> {tcp1}"
    lan1, wan1 = read("state-flows-lan-boot1.log"), read("state-flows-wan-boot1.log")
    assert re.search(rf"^[\d.]+ udp {WAN_HOST}:7000 push \d+$", lan1, re.M), \
        f"the WAN host's datagram after the restart did not reach the LAN host:\n{lan1}"
    assert re.search(rf"^[\d.]+ tcp {WAN_HOST}:7001 push \d+$", lan1, re.M), \
        f"the WAN host's data on the TCP connection after the restart did not reach the LAN host:\n{lan1}"
    assert re.search(rf"^[\d.]+ udp {ROUTER_WAN}:{udp1['outside'].rsplit(':', 1)[1]} ack \d+$", wan1, re.M), \
        f"the LAN host's answer did not reach the WAN host from the restored session's outside port:\n{wan1}"
    assert re.search(rf"^[\d.]+ tcp {ROUTER_WAN}:{tcp1['outside'].rsplit(':', 1)[1]} ack \d+$", wan1, re.M), wan1

    # The poweroff: systemd stopped vpnrouter.service, which wrote the file the second boot took up.
    journal1 = read("state-journal-boot1.txt")
    stops = [float(t) for t in re.findall(r"^(\d+\.\d+) .*Stopping (?:vpnrouter\.service|vpnrouter on TAP)",
                                          journal1, re.M)]
    written = written_lines(journal1)
    assert len(stops) >= 2, f"two stops of vpnrouter.service in boot 1 wanted (restart, poweroff):\n{journal1}"
    assert written and written[-1][0] >= stops[-1] and written[-1][1] >= 2, \
        f"no state file written with the sessions after the last stop of boot 1:\n{journal1}"
    reboot = read("state-status-reboot.json")["state"]
    assert reboot["file"] == STATE_FILE and reboot["refused"] is None and not reboot["fresh"], reboot
    again = reboot["restored"]
    assert again is not None, f"after the reboot the router restored nothing: {reboot}"
    assert again["counts"].get("mapping", 0) >= 2 and again["counts"].get("session", 0) >= 2, again
    assert again["dropped"] == [], again
    assert abs(again["written"] - written[-1][0]) < 5, \
        f"the file restored after the reboot ({again['written']}) is not the one written at the poweroff " \
        f"({written[-1][0]}): {again}"
    journal2 = read("state-journal-boot2.txt")
    assert re.search(rf"state file {re.escape(STATE_FILE)}: written [\d.]+ s ago; restored \d+ mappings, \d+ sessions",
                     journal2), f"no restore line in the second boot's journal:\n{journal2}"

    # The same sessions after the reboot, and the restored UDP flow carries a datagram from the WAN host to the
    # LAN host, which the router had to find again by ARP (another MAC), and the answer back.
    udp2, tcp2 = flows_of(read("state-sessions-reboot-start.json"), "after the reboot")
    assert_same(udp1, udp2, "UDP, reboot")
    assert_same(tcp1, tcp2, "TCP, reboot")
    udp3, _ = flows_of(read("state-sessions-reboot.json"), "after the reboot's traffic")
    assert_same(udp1, udp3, "UDP, reboot, after its traffic")
    assert udp3["packets_in"] > udp2["packets_in"] and udp3["packets_out"] > udp2["packets_out"], (udp2, udp3)
    mac1, mac2 = read("state-lan-mac-boot1").strip(), read("state-lan-mac-boot2").strip()
    assert re.fullmatch(r"[0-9a-f:]{17}", mac1) and re.fullmatch(r"[0-9a-f:]{17}", mac2) and mac1 != mac2, \
        f"the LAN host made again should have another MAC: {mac1!r}, {mac2!r}"
    lan2, wan2 = read("state-flows-lan-boot2.log"), read("state-flows-wan-boot2.log")
    assert re.search(rf"^[\d.]+ udp {WAN_HOST}:7000 push \d+$", lan2, re.M), \
        f"after the reboot the WAN host's datagram did not reach the LAN host:\n{lan2}"
    assert re.search(rf"^[\d.]+ udp {ROUTER_WAN}:{udp1['outside'].rsplit(':', 1)[1]} ack \d+$", wan2, re.M), \
        f"after the reboot the LAN host's answer did not reach the WAN host:\n{wan2}"
