"""Real PPTP peers in the lab: pptpd (server) and pptp-linux (client), with pppd or its stand-in.

Each daemon runs in its host's network namespace and in a private mount
namespace of its own (../shared/REFERENCE.md, "Real peers on this machine"):
a tmpfs ``/run`` so that several instances of one program do not share
their sockets and pid files, and a fresh devpts for the ptys pptpd gives
pppd.  Then either:

* ``real_ppp=True`` (a kernel with ``/dev/ppp``, see ``kernel.py``): the real
  pppd, with MS-CHAPv2 and 128-bit MPPE required on both sides (RFC 3078,
  RFC 2759), its own ``/etc/ppp/options`` and ``chap-secrets`` bind-mounted
  from the daemon's directory, its log in ``pppd.log`` there; or
* the stand-in (``pppd_standin.py``) bind-mounted over ``/usr/sbin/pppd``.
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
"""
PPP_SECRET = "vpnrouter-lab"
"""Every lab PPP peer's MS-CHAPv2 secret (``chap-secrets``: any client, any server)."""
PPTP_SERVER_NAME = "pptpd"
PPTP_INTERFACE = "vpn-pptp"
"""The PPP interface of a client's PPTP call (pppd's ``ifname``), in the client's namespace."""
PPTPD_LOCAL_IP = "10.99.0.1"
MPPE_OPTIONS = ("require-mppe-128", "refuse-pap", "refuse-chap", "refuse-mschap", "refuse-eap",
                "nobsdcomp", "nodeflate", "novj")


def pppd_wrapper(directory: Path) -> Path:
    """An executable that runs the stand-in with this Python, to stand where pppd is."""
    path = directory / "pppd"
    path.write_text(f"#!/bin/sh\nVPNROUTER_PPP_LOG={shlex.quote(str(directory))} exec "
                    f"{shlex.quote(sys.executable)} {shlex.quote(str(STANDIN))} \"$@\"\n")
    path.chmod(0o755)
    return path


def ppp_mounts(directory: Path, real_ppp: bool) -> str:
    """Shell lines for a daemon's private mount namespace: the stand-in over ``/usr/sbin/pppd``, or, for the
    real pppd, this directory's ``/etc/ppp/options`` (nothing system-wide) and ``chap-secrets``."""
    if not real_ppp:
        return f"mount --bind {shlex.quote(str(pppd_wrapper(directory)))} /usr/sbin/pppd\n"
    options, secrets = directory / "etc-ppp-options", directory / "chap-secrets"
    options.write_text("# the lab's pppd: no system-wide options (vpnrouter, router/lab/pptp.py)\n")
    secrets.write_text(f'* * "{PPP_SECRET}" *\n')
    secrets.chmod(0o600)
    return (f"mount --bind {shlex.quote(str(options))} /etc/ppp/options\n"
            f"mount --bind {shlex.quote(str(secrets))} /etc/ppp/chap-secrets\n")


def pppd_options(directory: Path, *options: str) -> str:
    """Lines of a pppd options file: ``options``, then debugging to ``pppd.log`` in ``directory``."""
    common = ("nodefaultroute", "noipv6", "lcp-echo-interval 10", "lcp-echo-failure 6", "debug",
              f"logfile {directory / 'pppd.log'}")
    return "".join(f"{line}\n" for line in (*options, *common))


def _private(lab: Lab, ns: str, directory: Path, command: str, log_name: str,
             real_ppp: bool = False) -> subprocess.Popen:
    script = PRIVATE_MOUNTS.format(rundir="pptp") + ppp_mounts(directory, real_ppp)
    script += f"exec {command}\n"
    log = open(directory / log_name, "w")
    return lab.popen_in(ns, "unshare", "-m", "--propagation", "private", "sh", "-c", script,
                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                        env={"VPNROUTER_PPP_LOG": str(directory),
                                                                   "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})


def start_pptpd(lab: Lab, ns: str, directory: Path, real_ppp: bool = False) -> subprocess.Popen:
    """pptpd in the foreground, handing each call to pppd (MPPE required) or to the stand-in."""
    directory.mkdir(parents=True, exist_ok=True)
    options = (f"name {PPTP_SERVER_NAME}\n" if not real_ppp else
               pppd_options(directory, f"name {PPTP_SERVER_NAME}", "require-mschap-v2", *MPPE_OPTIONS))
    (directory / "pptpd-options").write_text(options)
    (directory / "pptpd.conf").write_text(f"option {directory / 'pptpd-options'}\nlocalip {PPTPD_LOCAL_IP}\n"
                                          "remoteip 10.99.0.100-199\nconnections 100\n")
    return _private(lab, ns, directory, f"pptpd --fg -c {directory / 'pptpd.conf'}", "pptpd.out", real_ppp)


def start_pptp_client(lab: Lab, ns: str, server: str, directory: Path, real_ppp: bool = False,
                      name: str | None = None) -> subprocess.Popen:
    """pptp-linux (``--nolaunchpppd``) on the line of pppd (``pty``; MPPE, interface ``vpn-pptp``) or of
    the stand-in."""
    directory.mkdir(parents=True, exist_ok=True)
    pptp = f"pptp {server} --nolaunchpppd --nohostroute"
    if not real_ppp:
        command = f"{shlex.quote(sys.executable)} {shlex.quote(str(STANDIN))} --spawn {pptp} --nobuffer"
        return _private(lab, ns, directory, command, "pptp.out")
    (directory / "pppd-options").write_text(pppd_options(
        directory, f"name {name or ns}", f"remotename {PPTP_SERVER_NAME}", "noauth", f"ifname {PPTP_INTERFACE}",
        *MPPE_OPTIONS))
    command = f"pppd nodetach pty {shlex.quote(pptp)} file {shlex.quote(str(directory / 'pppd-options'))}"
    return _private(lab, ns, directory, command, "pptp.out", real_ppp)


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
