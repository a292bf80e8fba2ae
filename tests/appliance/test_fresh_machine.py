"""`make demo` from a fresh clone on a fresh Debian 12 machine, one without kmod (issue 17).

`make demo` on a machine without the Debian package kmod used to end in a traceback (`FileNotFoundError:
'modprobe'` from router/lab/kernel.py). The machine here is a `debootstrap --variant=minbase bookworm` root file
system (no kmod, git, make or Python in it), from the mirror apt's sources name, debootstrapped once and cached
under $IMAGE_CACHE/fresh-machine; each run works on a fresh copy of it, with the mounts a booted machine has, in
mount and PID namespaces of its own (fresh_machine.sh, its PID 1), sharing only the host's network (for the
mirror and PyPI; the host's DNS, apt mirror settings, pip configuration and CA certificates are copied in).

In it, as a new user would: `apt-get update && apt-get install -y git make`, `git clone` of this repository
(its committed HEAD), then `make demo` typed into a shell in a terminal (a tmux pane on the host whose shell runs
in the machine). The test waits for the dashboard with the demo's PPTP, L2TP and IPsec sessions, checks that kmod
is now installed, quits with `q`, answers the prompt so that the lab goes down, and checks that nothing of the lab
is left and that no traceback appeared. Cached between runs: the minbase root, apt's .debs and pip's downloads
(not the wheels pip builds); never kmod, the clone or the venv, which `make demo` makes itself.

Needs root, debootstrap (`make image-deps`), tmux, unshare and nsenter; fails with the reason where one is missing.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import importlib.util
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import ROOT, need, require_root, run, tail



def _images_module(name: str):
    """A module of images/ (a folder of scripts, not a package), loaded from its file."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "images" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


apt_sources = _images_module("apt_sources")
"""images/apt_sources.py: the mirror images/build.sh reads too."""

SUITE = "bookworm"
CACHE = Path(os.environ.get("IMAGE_CACHE", "/var/cache/vpnrouter-image")) / "fresh-machine"
HELPER = Path(__file__).with_name("fresh_machine.sh")
TMUX_SOCKET = "vpnrouter-fresh-machine"
SESSION = "demo"
COLUMNS, LINES = 160, 48
ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "USER=root",
       "LOGNAME=root", "SHELL=/bin/bash", "LANG=C.UTF-8"]
"""The environment of a root login on the machine (nothing of the test's: no PIP_*, COLUMNS or LINES)."""

DEBOOTSTRAP_TIMEOUT = 20 * 60
APT_TIMEOUT = 15 * 60
DEMO_TIMEOUT = 30 * 60
"""From `make demo` typed to the dashboard: every Debian package of the Makefile's DEBS, the venv, the lab."""
QUIT_TIMEOUT = 5 * 60

EXITED = re.compile(r"make demo: exit status (\d+)")
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[PX^_][^\x1b]*\x1b\\|\x1b[@-Z\\-_]"
                  r"|\x1b[()*+].|[\x00-\x08\x0b-\x1f\x7f]")
DASHBOARD = ("connected", "fast path", "PPTP  ON", "L2TP  ON", "IPsec  ON", "192.168.77.11", "192.168.77.12",
             "192.168.77.13")
"""On screen once the dashboard shows the demo: the link to the router, the fast path (built by `make demo`'s
`pip install` on the fresh machine), the three switches, and the three clients (c1's PPTP call, c2's L2TP tunnel,
c3's IPsec association) in the VPN pane."""
LAB_PROGRAMS = ("router", "pptpd", "pptp", "xl2tpd", "charon", "pppd", "pppd_standin.py", "swanctl")


# -- the host's apt sources -------------------------------------------------------------------------------------

def mirror() -> str:
    mirrors = apt_sources.mirrors(SUITE)
    if not mirrors:
        pytest.fail(f"no apt source for {SUITE} in /etc/apt/sources.list or /etc/apt/sources.list.d")
    return mirrors[0]


def machine_sources() -> str:
    """The machine's sources.list: the host's Debian entries for the suite, its updates and its security."""
    suites = (SUITE, f"{SUITE}-updates", f"{SUITE}-security")
    lines = [f"deb {uri} {suite} {' '.join(components) or 'main'}"
             for uri, suite, components in apt_sources.entries() if suite in suites]
    return "\n".join(dict.fromkeys(lines)) + "\n"


def machine_apt_conf() -> str:
    """What the host's apt needs to reach its mirror (a snapshot's expired Release files, a proxy)."""
    dump = subprocess.run(["apt-config", "dump"], capture_output=True, text=True, timeout=30).stdout
    wanted = re.compile(r'^Acquire::(Check-Valid-Until|Check-Date|https?::Proxy(::\S+)?|Retries) ".*";$')
    return "".join(line + "\n" for line in dump.splitlines() if wanted.match(line))


# -- the cached minbase root --------------------------------------------------------------------------------------

STARTED = [time.monotonic()]


def step(message: str) -> None:
    print(f"[fresh machine {time.monotonic() - STARTED[0]:5.0f}s] {message}", flush=True)


@pytest.fixture(scope="module")
def cache():
    """The test's cache directory, locked for this run (one fresh machine at a time)."""
    require_root()
    need("debootstrap", "tmux", "unshare", "nsenter", "chroot", "apt-config")
    STARTED[0] = time.monotonic()
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            step(f"waiting for another run using {CACHE}")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield CACHE


@pytest.fixture(scope="module")
def minbase(cache) -> Path:
    """`debootstrap --variant=minbase` of Debian 12, made once per (suite, mirror) and kept."""
    source = mirror()
    key = hashlib.sha256(f"minbase {SUITE} {source}".encode()).hexdigest()[:16]
    base, debs = cache / "minbase", cache / "debs"
    if base.is_dir() and (cache / "minbase.key").is_file() and (cache / "minbase.key").read_text().strip() == key:
        step(f"minbase: cached ({base}, key {key})")
        return base
    step(f"minbase: debootstrap --variant=minbase {SUITE} from {source} into {base}")
    (cache / "minbase.key").unlink(missing_ok=True)
    remove_tree(base)
    remove_tree(Path(f"{base}.tmp"))
    debs.mkdir(exist_ok=True)
    # its own mount namespace: whatever debootstrap mounts in the target goes with it, even when it fails
    result = run(["unshare", "--mount", "--propagation", "private", "debootstrap", "--variant=minbase",
                  "--components=main", f"--cache-dir={debs}", SUITE, f"{base}.tmp", source],
                 timeout=DEBOOTSTRAP_TIMEOUT)
    if result.returncode != 0:
        pytest.fail(f"debootstrap failed:\n{tail(result.stdout)}")
    for deb in Path(f"{base}.tmp/var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
    Path(f"{base}.tmp").rename(base)
    (cache / "minbase.key").write_text(key + "\n")
    step("minbase: done")
    return base


def remove_tree(path: Path) -> None:
    """rm -rf that never leaves the file system it starts on (nothing is ever mounted there on the host)."""
    if path.exists() or path.is_symlink():
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=True, timeout=600)


# -- the machine ------------------------------------------------------------------------------------------------

def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)     # PR_SET_PDEATHSIG: unshare dies with pytest


class Machine:
    """A copy of the minbase root, up in its own mount and PID namespaces (fresh_machine.sh is its PID 1)."""

    def __init__(self, root: Path, init: subprocess.Popen, pid1: int):
        self.root, self.init, self.pid1 = root, init, pid1
        self.pidns = os.readlink(f"/proc/{pid1}/ns/pid")

    def command(self, *argv: str) -> list[str]:
        """ARGV as run on the machine: in its namespaces, chrooted in its root, with a login's environment."""
        return self.entry() + ENV + list(argv)

    def entry(self) -> list[str]:
        return ["nsenter", f"--target={self.pid1}", "--mount", "--pid", "--", "chroot", str(self.root),
                "/usr/bin/env", "-i"]

    def sh(self, script: str, timeout: float = 120, check: bool = False) -> subprocess.CompletedProcess:
        """A shell command line on the machine, as root in /root."""
        return run(self.command("/bin/bash", "-c", f"cd /root && {script}"), timeout=timeout, check=check)

    def processes(self) -> dict[int, str]:
        """Host PID -> command line of every process on the machine (in its PID namespace)."""
        found = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") == self.pidns:
                    cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
                    found[int(entry)] = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                pass
        return found


def prepare(root: Path) -> None:
    """What the machine takes from the host to reach the network as the host does: DNS, the apt mirror and its
    settings, pip's configuration (its index), and the CA certificates TLS to PyPI goes through here."""
    for name in ("resolv.conf", "hosts"):
        if Path("/etc", name).is_file():
            target = root / "etc" / name
            target.unlink(missing_ok=True)
            target.write_text(Path("/etc", name).read_text())
    (root / "etc/apt/sources.list").write_text(machine_sources())
    for extra in (root / "etc/apt/sources.list.d").glob("*"):
        extra.unlink()
    (root / "etc/apt/apt.conf.d/99mirror-from-host").write_text(machine_apt_conf())
    if Path("/etc/pip.conf").is_file():
        shutil.copy2("/etc/pip.conf", root / "etc/pip.conf")
    if Path("/etc/xdg/pip").is_dir():
        shutil.copytree("/etc/xdg/pip", root / "etc/xdg/pip", dirs_exist_ok=True)
    local_cas = root / "usr/local/share/ca-certificates"
    local_cas.mkdir(parents=True, exist_ok=True)
    for ca in Path("/usr/local/share/ca-certificates").glob("*.crt"):
        shutil.copy2(ca, local_cas / ca.name)      # update-ca-certificates keeps them when ca-certificates comes
    if Path("/etc/ssl/certs/ca-certificates.crt").is_file():
        (root / "etc/ssl/certs").mkdir(parents=True, exist_ok=True)
        shutil.copy2("/etc/ssl/certs/ca-certificates.crt", root / "etc/ssl/certs/ca-certificates.crt")


def sources_to_clone() -> list[str]:
    """The repository's top directory, and its git directory where that lies elsewhere (a worktree)."""
    top = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    if top.returncode != 0 or Path(top.stdout.strip()).resolve() != ROOT.resolve():
        pytest.fail(f"{ROOT} is not the top of a git work tree: the test clones it ({top.stderr.strip()})")
    common = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--path-format=absolute", "--git-common-dir"],
                            capture_output=True, text=True, check=True).stdout.strip()
    inside = Path(common).resolve().is_relative_to(ROOT.resolve())
    return [str(ROOT.resolve())] + ([] if inside else [str(Path(common).resolve())])


def tmux(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["tmux", "-L", TMUX_SOCKET, "-f", "/dev/null", *args], capture_output=True, text=True,
                          timeout=30)


@pytest.fixture(scope="module")
def machine(cache, minbase):
    step("machine: a copy of the minbase root")
    workdir = cache / "run"
    tmux("kill-server")                            # a session a killed run left
    remove_tree(workdir)
    archives, pipcache = cache / "debs", cache / "pip"
    archives.mkdir(exist_ok=True)
    pipcache.mkdir(exist_ok=True)
    remove_tree(pipcache / "wheels")               # what pip built (python-pytun): built again, with Debian's gcc
    workdir.mkdir()
    root = workdir / "root"
    init = None
    try:
        run(["cp", "-a", str(minbase), str(root)], timeout=600, check=True)
        prepare(root)
        init = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "--pid", "--fork",
                                 "--kill-child", "/bin/bash", str(HELPER), str(root), str(archives), str(pipcache),
                                 *sources_to_clone()],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                preexec_fn=_die_with_parent)
        said = b""
        deadline = time.monotonic() + 60
        while b"ready\n" not in said:
            if init.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"fresh_machine.sh did not come up (exit {init.poll()}): {said.decode(errors='replace')}")
            if select.select([init.stdout], [], [], 1)[0]:
                said += os.read(init.stdout.fileno(), 4096)
        children = Path(f"/proc/{init.pid}/task/{init.pid}/children").read_text().split()
        if len(children) != 1:
            pytest.fail(f"unshare ({init.pid}) has children {children}, expected the machine's PID 1")
        yield Machine(root, init, int(children[0]))
    finally:
        step("machine: down (tmux server, the machine's PID 1 and with it every process inside)")
        tmux("kill-server")
        leaked = []
        if init is not None:
            pidns = None
            try:
                pidns = os.readlink(f"/proc/{init.pid}/ns/pid_for_children")
            except OSError:
                pass
            init.kill()
            init.wait(timeout=30)
            init.stdout.close()
            deadline = time.monotonic() + 60
            while pidns and time.monotonic() < deadline:
                left = [p for p in os.listdir("/proc") if p.isdigit() and _pidns(p) == pidns]
                if not left:
                    break
                time.sleep(0.5)
            else:
                leaked.append(f"processes still in the machine's PID namespace: {left}" if pidns else "")
        mounts = [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(workdir) in line]
        if mounts:
            leaked.append("mounts of the machine on the host:\n" + "\n".join(mounts))
        else:
            remove_tree(workdir)
        leaked = [what for what in leaked if what]
        if leaked:
            pytest.fail("the fresh machine was not cleaned up: " + "; ".join(leaked))


def _pidns(pid: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


# -- the terminal -------------------------------------------------------------------------------------------------

class Terminal:
    """A tmux pane on the host whose shell (`bash -l`) runs on the machine; everything it shows goes to a log."""

    def __init__(self, machine: Machine, log: Path):
        self.log = log
        # a login shell on the machine, with TERM as tmux sets it in the pane
        command = f'{shlex.join(machine.entry())} "TERM=$TERM" {shlex.join(ENV + ["/bin/bash", "-l"])}'
        result = tmux("new-session", "-d", "-s", SESSION, "-x", str(COLUMNS), "-y", str(LINES),
                      f"cd / && exec {command}")
        if result.returncode != 0:
            pytest.fail(f"tmux new-session: {result.stderr}")
        tmux("resize-window", "-t", SESSION, "-x", str(COLUMNS), "-y", str(LINES))
        tmux("pipe-pane", "-t", SESSION, "-o", f"cat >> {shlex.quote(str(log))}")

    def screen(self) -> str:
        return tmux("capture-pane", "-p", "-t", SESSION).stdout

    def transcript(self) -> str:
        """Everything the pane printed, escape sequences taken out."""
        try:
            return ANSI.sub("", self.log.read_bytes().decode(errors="replace").replace("\r\n", "\n"))
        except FileNotFoundError:
            return ""

    def type(self, text: str, enter: bool = True) -> None:
        tmux("send-keys", "-t", SESSION, "-l", text)
        if enter:
            tmux("send-keys", "-t", SESSION, "Enter")

    def alive(self) -> bool:
        return tmux("has-session", "-t", SESSION).returncode == 0

    def wait(self, predicate, seconds: float, what: str) -> str:
        """Poll the screen until PREDICATE(screen); fail with what was shown when make demo ended first, the
        shell went away, or SECONDS passed."""
        deadline = time.monotonic() + seconds
        last_note = time.monotonic()
        while True:
            screen = self.screen()
            if predicate(screen):
                return screen
            transcript = self.transcript()
            ended = EXITED.search(transcript)
            if ended or not self.alive():
                how = f"with exit status {ended[1]}" if ended else "(the terminal closed)"
                traceback = " after a traceback" if "Traceback" in transcript else ""
                pytest.fail(f"make demo ended {how}{traceback} before {what}:\n{tail(transcript, 80)}\n"
                            f"--- screen ---\n{screen}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} after {seconds:.0f} s:\n{tail(transcript, 80)}\n--- screen ---\n{screen}")
            if time.monotonic() - last_note > 60:
                last_note = time.monotonic()
                lines = [line for line in transcript.splitlines() if line.strip()]
                step(f"  waiting for {what}; the terminal's last line: {lines[-1][:120] if lines else ''!r}")
            time.sleep(1)


# -- the test -----------------------------------------------------------------------------------------------------

def test_make_demo_on_a_fresh_machine_installs_kmod_and_opens_the_dashboard(machine):
    step("as a new user: apt-get update && apt-get install -y git make")
    installed = machine.sh("apt-get update -q && apt-get install -y -q git make", timeout=APT_TIMEOUT)
    assert installed.returncode == 0, f"apt-get install git make failed:\n{tail(installed.stdout)}"

    step(f"git clone {ROOT}")
    cloned = machine.sh(f"git clone {shlex.quote(str(ROOT.resolve()))} vpnrouter && git -C vpnrouter rev-parse HEAD",
                        timeout=300)
    assert cloned.returncode == 0, f"git clone failed:\n{tail(cloned.stdout)}"
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert cloned.stdout.split()[-1] == head, "the clone is not at the repository's committed HEAD"

    step("no kmod on the machine")
    kmod = machine.sh("dpkg -s kmod")
    assert kmod.returncode != 0 and "not installed" in kmod.stdout, \
        f"the fresh machine already has kmod, so it cannot show what `make demo` does without it:\n{kmod.stdout}"
    assert machine.sh("command -v modprobe").returncode != 0, "the fresh machine already has modprobe"

    step("make demo, typed into a terminal on the machine")
    terminal = Terminal(machine, machine.root.parent / "terminal.log")
    terminal.wait(lambda screen: screen.strip() != "", 60, "shell prompt")
    terminal.type('cd ~/vpnrouter && make demo; echo "make demo: exit status $?"')
    dashboard = terminal.wait(lambda screen: all(w in screen for w in DASHBOARD), DEMO_TIMEOUT,
                              "dashboard with the demo's PPTP, L2TP and IPsec sessions")
    step("the dashboard is up:\n" + dashboard)

    transcript = terminal.transcript()
    wanted = re.search(r"installing Debian packages:(.*)", transcript)
    assert wanted and "kmod" in wanted[1].split(), \
        f"make demo did not install kmod among the missing Debian packages:\n{tail(transcript)}"
    kmod = machine.sh("dpkg -s kmod && command -v modprobe")
    assert kmod.returncode == 0 and "Status: install ok installed" in kmod.stdout, \
        f"kmod is not installed after make demo:\n{kmod.stdout}"
    # the lab as the checks below will look for it once it is down: its namespaces and its processes
    netns = machine.sh("ip netns list")
    assert "vr-sw" in netns.stdout.split(), f"the lab's namespaces are not on the machine:\n{netns.stdout}"
    running = lab_processes(machine)
    assert any("router run" in cmdline for cmdline in running.values()), \
        f"the lab's router is not among the machine's processes: {machine.processes()}"

    step("q, then no to leaving the lab up")
    terminal.type("q", enter=False)
    terminal.wait(lambda screen: "Leave the lab up? [y/N]" in screen, 60, "question whether to leave the lab up")
    terminal.type("n")
    terminal.wait(lambda screen: EXITED.search(terminal.transcript()) is not None, QUIT_TIMEOUT,
                  "end of make demo")   # fails unless the exit status line appears
    transcript = terminal.transcript()
    status = int(EXITED.search(transcript)[1])
    step(f"make demo exited with status {status}")

    assert "Traceback" not in transcript and "FileNotFoundError" not in transcript, \
        f"a traceback on the terminal:\n{tail(transcript, 80)}"
    assert status == 0, f"make demo exited with {status}:\n{tail(transcript, 80)}"
    assert "lab: tearing down" in transcript, f"make demo did not tear the lab down:\n{tail(transcript)}"
    netns = machine.sh("ip netns list")
    assert netns.returncode == 0 and netns.stdout.strip() == "", \
        f"network namespaces left on the machine after the lab went down:\n{netns.stdout}"
    left = lab_processes(machine)
    assert not left, f"the lab's processes are still running after it went down: {left}"


def lab_processes(machine: Machine) -> dict[int, str]:
    """The machine's processes that belong to the lab: its router and VPN peers."""
    return {pid: cmdline for pid, cmdline in machine.processes().items()
            if pid != machine.pid1 and cmdline != "/bin/bash -l"
            and any(Path(word).name in LAB_PROGRAMS for word in cmdline.split())}
