"""Real L2TP peers in the lab: xl2tpd as LNS (server) and as LAC (client), with pppd or its stand-in.

With ``real_ppp=True`` (a kernel with ``/dev/ppp`` and ``l2tp_ppp``, see
``kernel.py``) xl2tpd hands each call to the kernel's L2TP and the real
pppd (``pppol2tp.so``; a LAC's PPP interface is ``vpn-l2tp``).  Without,
the kernel has no PPP or L2TP devices, so xl2tpd runs with
``force userspace = yes``: it gives each call's PPP to ``/usr/sbin/pppd`` on
a pty in async HDLC and carries it in L2TP data messages itself
(../shared/REFERENCE.md, "Real peers on this machine").  Each instance runs in
its host's network namespace and a private mount namespace of its own: a tmpfs
``/run``, a fresh devpts for the ptys, and the stand-in
(``pppd_standin.py``) bind-mounted over ``/usr/sbin/pppd`` (or pppd's own
files: ``pptp.ppp_mounts``).  Its
configuration, control pipe (``-C``), pid file, log (``-D``: in the
foreground, logging to stderr) and the stand-ins' PPP logs live in a directory
of its own.

xl2tpd draws every Tunnel ID and Session ID it assigns from two bytes of
``/dev/urandom``, opened afresh each time.  ``start_lac(..., tunnel_id=N)``
bind-mounts a file holding N over ``/dev/urandom`` in that LAC's mount
namespace, so several LACs announce the same Assigned Tunnel ID (and the same
Session ID) — the collision a NAT in front of them has to resolve.

    lns = start_lns(lab, lab.server(1), base / "lns")
    lac = start_lac(lab, lab.client(1), lab.server_ip(1), base / "c1", tunnel_id=4242)
    lac.connect()                      # "c lab" on its control pipe
    ppp_frames(lac.directory)          # what its stand-in received
    lns.peers()                        # [(address, port, lns tunnel id, peer tunnel id), ...] from its log
"""

from __future__ import annotations

import errno
import os
import re
import shlex
import signal
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .pptp import PRIVATE_MOUNTS, STANDIN, ppp_frames, ppp_mounts, pppd_options
from .topology import Lab, LabError

__all__ = ["Xl2tpd", "start_lns", "start_lac", "ppp_frames", "STANDIN"]

LAC_NAME = "lab"
LNS_LOCAL_IP = "10.98.0.1"
LNS_RANGE = "10.98.0.100-10.98.0.199"
L2TP_INTERFACE = "vpn-l2tp"
"""The PPP interface of a LAC's call under the real pppd, in the client's namespace."""


LNS_CONF = """[global]
port = 1701
force userspace = {userspace}
access control = no
debug tunnel = yes
debug state = yes

[lns default]
ip range = {range}
local ip = {local_ip}
require authentication = no
require chap = no
refuse pap = yes
name = lns
hostname = lns
pppoptfile = {options}
length bit = yes
"""

LAC_CONF = """[global]
port = 1701
force userspace = {userspace}
access control = no
debug tunnel = yes
debug state = yes

[lac {name}]
lns = {lns}
require authentication = no
require chap = no
refuse pap = yes
name = {host}
hostname = {host}
pppoptfile = {options}
length bit = yes
autodial = no
redial = no
"""

# "Connection established to 198.51.100.1, 1701.  Local: 1234, Remote: 4242 (ref=0/0)."  (control.c)
ESTABLISHED = re.compile(r"Connection established to ([\d.]+), (\d+)\.\s+Local: (\d+), Remote: (\d+)")
# "get_call: allocating new tunnel for host 198.51.100.1, port 1701."  (call.c, with debug tunnel)
ALLOCATING = re.compile(r"allocating new tunnel for host ([\d.]+), port (\d+)")
# "Call established with 198.51.100.10, Local: 1234, Remote: 5678, Serial: 1"  (control.c)
CALL_ESTABLISHED = re.compile(r"Call established with ([\d.]+),(?: PID: \d+,)? Local: (\d+), Remote: (\d+)")


@dataclass
class Xl2tpd:
    """One xl2tpd instance: its process (xl2tpd itself, in the foreground), its directory, its LAC's name."""

    proc: subprocess.Popen
    directory: Path
    role: str                     # "lns" or "lac"
    name: str = LAC_NAME

    @property
    def control_path(self) -> Path:
        return self.directory / "l2tp-control"

    @property
    def log_path(self) -> Path:
        return self.directory / "xl2tpd.out"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def control(self, command: str, wait: float = 10.0) -> None:
        """Write one command to the control pipe, once xl2tpd has it open for reading."""
        deadline = time.monotonic() + wait
        while True:
            if self.proc.poll() is not None:
                raise LabError(f"xl2tpd ({self.directory}) exited with {self.proc.returncode}: {self.log()[-1500:]}")
            try:
                fd = os.open(self.control_path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:   # no pipe yet (ENOENT) or no reader yet (ENXIO)
                if exc.errno not in (errno.ENOENT, errno.ENXIO) or time.monotonic() > deadline:
                    raise LabError(f"cannot write to {self.control_path}: {exc}") from exc
                time.sleep(0.05)
                continue
            try:
                os.write(fd, (command.rstrip("\n") + "\n").encode())
            finally:
                os.close(fd)
            return

    def connect(self) -> None:
        """Bring the LAC's tunnel and one session (call) up: ``c NAME``."""
        self.control(f"c {self.name}")

    def disconnect(self) -> None:
        """End the LAC's tunnel: ``d NAME``."""
        self.control(f"d {self.name}")

    def peers(self) -> list[tuple[str, int, int, int]]:
        """Tunnels established, from the log: (peer address, peer UDP port, our Tunnel ID, peer's Tunnel ID)."""
        return [(m[1], int(m[2]), int(m[3]), int(m[4])) for m in ESTABLISHED.finditer(self.log())]

    def tunnel_requests(self) -> list[tuple[str, int]]:
        """Every tunnel the LNS allocated for an SCCRQ, from the log: (peer address, peer UDP port)."""
        return [(m[1], int(m[2])) for m in ALLOCATING.finditer(self.log())]

    def calls(self) -> list[tuple[str, int, int]]:
        """Calls (sessions) established, from the log: (peer address, our Session ID, peer's Session ID)."""
        return [(m[1], int(m[2]), int(m[3])) for m in CALL_ESTABLISHED.finditer(self.log())]

    def frames(self) -> list[dict]:
        """Every PPP frame this instance's stand-ins received."""
        return ppp_frames(self.directory)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM to xl2tpd (it sends StopCCN and ends its stand-ins), then SIGKILL to its process group."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)   # the stand-ins xl2tpd started, if any are left
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.wait(timeout)


def _fixed_entropy(directory: Path, value: int) -> Path:
    """A file whose every two-byte read from its start gives ``value`` as xl2tpd reads it (host order)."""
    if not 0 < value <= 0xFFFF:
        raise ValueError("a Tunnel ID is 1..65535")
    path = directory / "urandom"
    path.write_bytes(struct.pack("=H", value) * 512)
    return path


def _start(lab: Lab, ns: str, directory: Path, conf: str, role: str, name: str,
           entropy: Path | None = None, real_ppp: bool = False) -> Xl2tpd:
    directory = directory.resolve()
    if directory == Path("/run") or Path("/run") in directory.parents:
        raise LabError(f"{directory}: xl2tpd's directory cannot be under /run (a tmpfs of its own hides it)")
    directory.mkdir(parents=True, exist_ok=True)
    lac_only = (f"ifname {L2TP_INTERFACE}",) if role == "lac" else ()
    (directory / "ppp-options").write_text(pppd_options(directory, "noauth", *lac_only) if real_ppp else "noauth\n")
    (directory / "l2tp-secrets").write_text("")
    (directory / "l2tp-secrets").chmod(0o600)
    (directory / "xl2tpd.conf").write_text(conf)
    for stale in directory.glob("ppp-*.log"):
        stale.unlink()
    script = PRIVATE_MOUNTS.format(rundir="xl2tpd") + ppp_mounts(directory, real_ppp)
    if entropy is not None:
        script += f"mount --bind {shlex.quote(str(entropy))} /dev/urandom\n"
    d = lambda p: shlex.quote(str(directory / p))  # noqa: E731
    script += (f"exec xl2tpd -D -c {d('xl2tpd.conf')} -s {d('l2tp-secrets')} -p {d('xl2tpd.pid')} "
               f"-C {d('l2tp-control')}\n")
    log = open(directory / "xl2tpd.out", "w")
    proc = lab.popen_in(ns, "unshare", "-m", "--propagation", "private", "sh", "-c", script,
                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                        env={"VPNROUTER_PPP_LOG": str(directory), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    log.close()
    daemon = Xl2tpd(proc, directory, role, name)
    _wait_listening(daemon)
    return daemon


def _wait_listening(daemon: Xl2tpd, wait: float = 10.0) -> None:
    """Until xl2tpd has made its control pipe (it does so once its UDP socket is bound)."""
    deadline = time.monotonic() + wait
    while not daemon.control_path.exists():
        if daemon.proc.poll() is not None or time.monotonic() > deadline:
            daemon.stop()
            raise LabError(f"xl2tpd ({daemon.directory}) did not start: {daemon.log()[-1500:]}")
        time.sleep(0.05)


def start_lns(lab: Lab, ns: str, directory: Path, real_ppp: bool = False) -> Xl2tpd:
    """An xl2tpd LNS on UDP 1701 that accepts any LAC and gives each call to pppd or to the stand-in."""
    directory.mkdir(parents=True, exist_ok=True)
    conf = LNS_CONF.format(range=LNS_RANGE, local_ip=LNS_LOCAL_IP, options=directory / "ppp-options",
                           userspace=_userspace(real_ppp))
    return _start(lab, ns, directory, conf, "lns", "default", real_ppp=real_ppp)


def _userspace(real_ppp: bool) -> str:
    return "no" if real_ppp else "yes"


def start_lac(lab: Lab, ns: str, lns: str, directory: Path, tunnel_id: int | None = None,
              host: str | None = None, connect: bool = False, real_ppp: bool = False) -> Xl2tpd:
    """An xl2tpd LAC (``[lac lab]``) on UDP 1701 towards ``lns``; ``connect()`` brings its tunnel and call up.

    With ``tunnel_id`` the LAC assigns that Tunnel ID (and Session ID) to everything it opens.
    """
    directory.mkdir(parents=True, exist_ok=True)
    conf = LAC_CONF.format(name=LAC_NAME, lns=lns, host=host or ns, options=directory / "ppp-options",
                           userspace=_userspace(real_ppp))
    entropy = _fixed_entropy(directory, tunnel_id) if tunnel_id is not None else None
    daemon = _start(lab, ns, directory, conf, "lac", LAC_NAME, entropy, real_ppp)
    if connect:
        daemon.connect()
    return daemon
