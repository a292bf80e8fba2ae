"""Real PPTP peers in the lab: pptpd (server) and pptp-linux (client), with the pppd stand-in.

Each daemon runs in its host's network namespace and in a private mount
namespace of its own (../shared/REFERENCE.md, "Real peers on this machine"):
a tmpfs ``/run`` so that several instances of one program do not share
their sockets and pid files, a fresh devpts for the ptys pptpd gives pppd,
and the stand-in (``pppd_standin.py``) bind-mounted over ``/usr/sbin/pppd``.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

from .topology import Lab

STANDIN = Path(__file__).with_name("pppd_standin.py")
PRIVATE_MOUNTS = """set -e
mount -t tmpfs tmpfs /run
mkdir -p /run/{rundir} /run/lock
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
mount --bind /dev/pts/ptmx /dev/ptmx
mount --bind {pppd} /usr/sbin/pppd
"""


def pppd_wrapper(directory: Path) -> Path:
    """An executable that runs the stand-in with this Python, to stand where pppd is."""
    path = directory / "pppd"
    path.write_text(f"#!/bin/sh\nVPNROUTER_PPP_LOG={shlex.quote(str(directory))} exec "
                    f"{shlex.quote(sys.executable)} {shlex.quote(str(STANDIN))} \"$@\"\n")
    path.chmod(0o755)
    return path


def _private(lab: Lab, ns: str, directory: Path, command: str, log_name: str) -> subprocess.Popen:
    script = PRIVATE_MOUNTS.format(rundir="pptp", pppd=shlex.quote(str(pppd_wrapper(directory))))
    script += f"exec {command}\n"
    log = open(directory / log_name, "w")
    return lab.popen_in(ns, "unshare", "-m", "--propagation", "private", "sh", "-c", script,
                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                        env={"VPNROUTER_PPP_LOG": str(directory),
                                                                   "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})


def start_pptpd(lab: Lab, ns: str, directory: Path) -> subprocess.Popen:
    """pptpd in the foreground, handing each call to the stand-in."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "pptpd-options").write_text("name pptpd\n")
    (directory / "pptpd.conf").write_text(f"option {directory / 'pptpd-options'}\nlocalip 10.99.0.1\n"
                                          "remoteip 10.99.0.100-199\nconnections 100\n")
    return _private(lab, ns, directory, f"pptpd --fg -c {directory / 'pptpd.conf'}", "pptpd.out")


def start_pptp_client(lab: Lab, ns: str, server: str, directory: Path) -> subprocess.Popen:
    """pptp-linux with the stand-in on its line (``--nolaunchpppd``)."""
    directory.mkdir(parents=True, exist_ok=True)
    command = (f"{shlex.quote(sys.executable)} {shlex.quote(str(STANDIN))} --spawn "
               f"pptp {server} --nolaunchpppd --nohostroute --nobuffer")
    return _private(lab, ns, directory, command, "pptp.out")


def ppp_frames(directory: Path) -> list[dict]:
    """Every PPP frame the stand-ins under ``directory`` received."""
    frames = []
    for path in sorted(directory.glob("ppp-*.log")):
        for line in path.read_text().splitlines():
            try:
                frames.append(json.loads(line))
            except ValueError:
                pass
    return frames
