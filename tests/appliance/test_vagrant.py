"""vagrant/Vagrantfile with the libvirt provider on the box `make image` built.

Where no init system runs libvirt (as in CI) the test starts virtlogd and libvirtd itself and stops them after.
Whatever the run leaves in libvirt and on the host is removed at the end: the domain, the box's volume in the
storage pool, the networks and the pool vagrant-libvirt made, libvirt's LIBVIRT_* iptables chains, kernel
copies in /var/lib/libvirt/boot, and the forwarding sysctls get their old values back.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from .conftest import ROOT, need, require_root, run, tail

VAGRANT_DIR = ROOT / "vagrant"
LIBVIRT_BOOT = Path("/var/lib/libvirt/boot")
FORWARDING = ("/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding")
UP_TIMEOUT = 20 * 60
LAB_TIMEOUT = 8 * 60
"""After `vagrant up`, the time the lab may take to come up with its three sessions (TCG, 2 cores)."""


def virsh(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    result = subprocess.run(["virsh", "-q", "-c", "qemu:///system", *args], capture_output=True, text=True,
                            timeout=120)
    if check and result.returncode != 0:
        pytest.fail(f"virsh {' '.join(args)}: {result.stderr.strip()}")
    return result


def names(*args: str) -> set[str]:
    return {line.split()[0] for line in virsh(*args).stdout.splitlines() if line.strip()}


def iptables_chains() -> dict[tuple[str, str], set[str]]:
    chains = {}
    for tool in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle"):
            out = subprocess.run([tool, "-t", table, "-S"], capture_output=True, text=True).stdout
            chains[(tool, table)] = set(re.findall(r"^-N (LIBVIRT_\S+)", out, re.M))
    return chains


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie that nobody reaps has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return False


class Libvirt:
    """libvirtd for the test: the running one, or one started here; and the record of what was there before."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.started: list[tuple[str, int]] = []

    def start(self) -> None:
        need("virsh", "libvirtd", "virtlogd", "vagrant", "qemu-system-x86_64", "dnsmasq", "iptables")
        if virsh("uri").returncode != 0:
            for daemon in ("virtlogd", "libvirtd"):
                pidfile = self.tmp / f"{daemon}.pid"
                subprocess.run([daemon, "-d", "-p", str(pidfile)], check=True, timeout=60)
                deadline = time.monotonic() + 10
                while not pidfile.exists() and time.monotonic() < deadline:
                    time.sleep(0.1)
                self.started.append((daemon, int(pidfile.read_text())))
            deadline = time.monotonic() + 30
            while virsh("uri").returncode != 0:
                if time.monotonic() > deadline:
                    pytest.fail(f"libvirtd started but does not answer: {virsh('uri').stderr.strip()}")
                time.sleep(0.5)
        self.before = {
            "networks": names("net-list", "--all", "--name"),
            "active_networks": names("net-list", "--name"),
            "pools": names("pool-list", "--all", "--name"),
            "volumes": names("vol-list", "default") if "default" in names("pool-list", "--name") else set(),
            "chains": iptables_chains(),
            "forwarding": {path: Path(path).read_text() for path in FORWARDING if Path(path).exists()},
            "boot": set(os.listdir(LIBVIRT_BOOT)) if LIBVIRT_BOOT.is_dir() else set(),
        }

    def clean(self, prefix: str) -> list[str]:
        """Remove what the test left; return what could not be removed."""
        problems = []
        for domain in names("list", "--all", "--name"):
            if domain.startswith(prefix):
                virsh("destroy", domain)
                virsh("undefine", domain, "--nvram")
        if "default" in names("pool-list", "--name"):
            for volume in names("vol-list", "default") - self.before["volumes"]:
                if virsh("vol-delete", "--pool", "default", volume).returncode != 0:
                    problems.append(f"volume {volume}")
        for network in names("net-list", "--name") - self.before["active_networks"]:
            virsh("net-destroy", network)
        for network in names("net-list", "--all", "--name") - self.before["networks"]:
            virsh("net-undefine", network)
        for pool in names("pool-list", "--all", "--name") - self.before["pools"]:
            virsh("pool-destroy", pool)
            virsh("pool-undefine", pool)
        for daemon, pid in reversed(self.started):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + 15
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if alive(pid):
                problems.append(f"{daemon} (pid {pid}) did not stop")
        for (tool, table), chains in iptables_chains().items():
            new = chains - self.before["chains"][(tool, table)]
            rules = subprocess.run([tool, "-t", table, "-S"], capture_output=True, text=True).stdout.splitlines()
            for rule in rules:       # the jumps into libvirt's chains from the built-in ones
                words = rule.split()
                if words[:1] == ["-A"] and words[1] not in new and any(w in new for w in words):
                    subprocess.run([tool, "-t", table, "-D", *words[1:]], capture_output=True)
            for chain in new:
                subprocess.run([tool, "-t", table, "-F", chain], capture_output=True)
            for chain in new:
                if subprocess.run([tool, "-t", table, "-X", chain], capture_output=True).returncode != 0:
                    problems.append(f"{tool} -t {table} chain {chain}")
        for path, value in self.before["forwarding"].items():
            Path(path).write_text(value)
        if LIBVIRT_BOOT.is_dir():
            for name in set(os.listdir(LIBVIRT_BOOT)) - self.before["boot"]:
                if name.startswith("vagrant-"):
                    (LIBVIRT_BOOT / name).unlink()
        return problems


@pytest.fixture(scope="module")
def vagrant(image):
    """`vagrant` in vagrant/ with a Vagrant home, machine state and domain name of the test's own."""
    require_root()
    tmp = Path(tempfile.mkdtemp(prefix="vpnrouter-vagrant-"))
    libvirt = Libvirt(tmp)
    prefix = f"vpnrouter-test{os.getpid()}-"
    env = dict(os.environ, VAGRANT_HOME=str(tmp / "home"), VAGRANT_DOTFILE_PATH=str(tmp / "machines"),
               VPNROUTER_VM_PREFIX=prefix, VAGRANT_NO_COLOR="1", VAGRANT_CHECKPOINT_DISABLE="1")
    env.pop("VPNROUTER_BOX", None)

    def vagrant_cmd(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return run(["vagrant", *args], timeout=timeout, cwd=VAGRANT_DIR, env=env)

    try:
        libvirt.start()
        yield vagrant_cmd
    finally:
        if (tmp / "machines").exists():
            vagrant_cmd("destroy", "-f", timeout=300)
        problems = libvirt.clean(prefix)
        shutil.rmtree(tmp, ignore_errors=True)
        if problems:
            pytest.fail(f"libvirt leftovers that could not be removed: {', '.join(problems)}")


def test_vagrantfile_validates():
    need("vagrant")
    for box in ("local", "public"):
        env = dict(os.environ, VPNROUTER_BOX=box)
        result = run(["vagrant", "validate"], timeout=120, cwd=VAGRANT_DIR, env=env)
        assert result.returncode == 0, f"vagrant validate ({box} box): {tail(result.stdout)}"


def test_vagrant_up_shows_the_live_lab_then_destroy(vagrant):
    """`vagrant up --provider=libvirt` on the box built here, the lab's router answering `ctl status --json`
    on the default socket over `vagrant ssh`, its PPTP, L2TP and IPsec sessions live; then `vagrant destroy -f`."""
    up = vagrant("up", "--provider=libvirt", timeout=UP_TIMEOUT)
    assert up.returncode == 0, f"vagrant up failed:\n{tail(up.stdout)}"
    assert "images/out/vpnrouter-libvirt.json" in up.stdout, "vagrant up did not take the box built here"

    status = wait_for_json(vagrant, "sudo vpnrouter ctl status --json", lambda s: "counters" in s)
    assert all(status["passthrough"].values()), status["passthrough"]

    # the lab unit connects a PPTP, an L2TP and an IPsec client: wait for all three to show
    sessions = wait_for_json(vagrant, "sudo vpnrouter ctl sessions --json",
                             lambda s: {"pptp", "l2tp", "ipsec"} <= {x.get("vpn") for x in s})
    vpns = {s.get("vpn"): s for s in sessions if s.get("vpn")}
    assert vpns["pptp"] and vpns["l2tp"] and vpns["ipsec"]
    lab = vagrant("ssh", "-c", "systemctl is-active vpnrouter-lab.service", timeout=120)
    assert lab.stdout.strip().splitlines()[-1] == "active", tail(lab.stdout)

    down = vagrant("destroy", "-f", timeout=300)
    assert down.returncode == 0, f"vagrant destroy -f failed:\n{tail(down.stdout)}"
    state = vagrant("status", "--machine-readable", timeout=120)
    assert ",state,not_created" in state.stdout, tail(state.stdout)


def wait_for_json(vagrant, command: str, ready, timeout: float = LAB_TIMEOUT):
    """Run `vagrant ssh -c COMMAND` until it prints JSON that `ready` accepts; fail with its last answer, at once
    if vpnrouter-lab.service has failed for good."""
    deadline = time.monotonic() + timeout
    probe = f"{command}; echo; echo lab-unit: $(systemctl is-active vpnrouter-lab.service)"
    while True:
        result = vagrant("ssh", "-c", probe, timeout=180)
        value = first_json(result.stdout)
        if value is not None and ready(value):
            return value
        unit = re.findall(r"^lab-unit: (\S+)", result.stdout, re.M)
        if unit[-1:] == ["failed"] or time.monotonic() > deadline:
            journal = vagrant("ssh", "-c", "sudo journalctl -b -u vpnrouter-lab.service --no-pager | tail -40",
                              timeout=180)
            why = "vpnrouter-lab.service failed" if unit[-1:] == ["failed"] else f"no answer in {timeout:.0f} s"
            pytest.fail(f"`{command}` in the VM: {why}; last answer:\n{tail(result.stdout)}\n"
                        f"--- journal of vpnrouter-lab.service ---\n{tail(journal.stdout)}")
        time.sleep(10)


def first_json(text: str):
    """The JSON value that starts a line of `text` (vagrant ssh adds its own lines around it), or None."""
    for match in re.finditer(r"^[\[{]", text, re.M):
        try:
            return json.JSONDecoder().raw_decode(text[match.start():])[0]
        except ValueError:
            continue
    return None
