"""The programs the lab runs and the Debian packages they come from: a missing one is one line, not a traceback.

``make deps`` (and so ``make demo`` and ``make test``) installs every package
named here; a machine set up some other way gets told which one to install.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from functools import lru_cache



class LabError(RuntimeError):
    """What went wrong building or using the lab, in one line for the user."""

PACKAGES = {
    "ip": "iproute2", "bridge": "iproute2", "nft": "nftables", "sysctl": "procps", "modprobe": "kmod",
    "unshare": "util-linux", "mount": "mount", "pptpd": "pptpd", "pptp": "pptp-linux", "xl2tpd": "xl2tpd",
    "/usr/lib/ipsec/charon": "strongswan-charon", "swanctl": "strongswan-swanctl", "ping": "iputils-ping",
    "iperf3": "iperf3", "tcpdump": "tcpdump", "tshark": "tshark", "openssl": "openssl", "openvpn": "openvpn",
    "wg": "wireguard-tools", "wireguard-go": "wireguard-go",
}
"""Program -> the Debian 12 package that has it (each is in the Makefile's DEBS)."""
SERVERS = ("unshare", "mount", "pptpd", "xl2tpd", "/usr/lib/ipsec/charon", "swanctl", "openvpn", "openssl", "wg")
"""What ``lab up`` starts in each server namespace."""
CLIENTS = {"pptp": ("unshare", "mount", "pptp"), "l2tp": ("unshare", "mount", "xl2tpd"),
           "ipsec": ("unshare", "mount", "/usr/lib/ipsec/charon", "swanctl"), "openvpn": ("openvpn", "openssl"),
           "openvpn-tcp": ("openvpn", "openssl"), "wireguard": ("unshare", "mount", "wg")}
"""What ``lab connect`` starts for each VPN (and ``wireguard-go`` where the kernel has no WireGuard)."""
USERSPACE_WIREGUARD = "wireguard-go"


@lru_cache(maxsize=None)
def installed(program: str) -> bool:
    return shutil.which(program) is not None


def require(*programs: str) -> None:
    """Raise ``LabError`` naming the package of the first program that is not installed."""
    for program in programs:
        if program in PACKAGES and not installed(program):
            raise LabError(missing(program))


def missing(program: str) -> str:
    package = PACKAGES[program]
    return (f"{program} is not installed: it comes with the Debian package {package} (apt-get install {package}; "
            f"`make deps` installs everything the lab needs)")


def stop_process(proc: subprocess.Popen, timeout: float = 5.0) -> int | None:
    """SIGTERM, then SIGKILL after ``timeout``; the exit status (None if it had to be killed)."""
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None
