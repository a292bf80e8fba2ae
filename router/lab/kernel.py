"""What the kernel offers the lab's VPN peers, and so which peers the lab runs.

* **PPP.**  Where the kernel has ``/dev/ppp`` (the appliance VM), the lab runs
  the real pppd: MS-CHAPv2 with 128-bit MPPE for PPTP (``ppp_mppe``), and
  xl2tpd hands its calls to the kernel's L2TP (``l2tp_ppp``, pppd's
  ``pppol2tp.so``).  Where it has none (these build machines), pppd cannot
  start, and the project's stand-in (``pppd_standin.py``) speaks PPP on the
  daemons' ptys instead: it carries PPP frames but no IP.
* **ESP.**  strongSwan installs its SAs in the kernel (``kernel-netlink``,
  XFRM with ``esp4``) where the kernel has ESP, and runs ESP in userspace
  (``kernel-libipsec``, a TUN device) where it has not.
* **WireGuard.**  The kernel's ``wireguard`` module where it has one (the VM),
  ``wireguard-go`` on a TUN where it has not (these build machines).

``VPNROUTER_LAB_PEERS=userspace`` chooses the stand-in and kernel-libipsec
whatever the kernel has; ``kernel`` insists on the kernel's and fails where
it is missing.  ``auto`` (the default) takes what there is.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from .tools import LabError, require

CHOICES = ("auto", "kernel", "userspace")
PPP_MODULES = ("ppp_generic", "ppp_async", "ppp_mppe", "l2tp_ppp")
ESP_MODULES = ("xfrm_user", "esp4")
WIREGUARD_MODULE = "wireguard"


@dataclass(frozen=True)
class Peers:
    """``ppp``: "pppd" (real, on /dev/ppp) or "stand-in"; ``esp``: "kernel" (XFRM) or "libipsec";
    ``wireguard``: "kernel" or "wireguard-go"."""

    ppp: str
    esp: str
    wireguard: str = "wireguard-go"

    @property
    def kernel_wireguard(self) -> bool:
        return self.wireguard == "kernel"

    @property
    def real_ppp(self) -> bool:
        return self.ppp == "pppd"

    @property
    def kernel_esp(self) -> bool:
        return self.esp == "kernel"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "Peers":
        """As saved in the lab's state; a lab made before the choice existed ran the userspace peers."""
        data = data or {}
        return cls(ppp=data.get("ppp", "stand-in"), esp=data.get("esp", "libipsec"),
                   wireguard=data.get("wireguard", "wireguard-go"))

    def describe(self) -> str:
        ppp = "pppd (MPPE, kernel L2TP)" if self.real_ppp else "the pppd stand-in (no /dev/ppp)"
        esp = "kernel ESP" if self.kernel_esp else "kernel-libipsec (ESP in userspace)"
        wireguard = "the kernel's WireGuard" if self.kernel_wireguard else "wireguard-go (WireGuard in userspace)"
        return f"{ppp}; {esp}; {wireguard}"


def _modprobe(*modules: str) -> None:
    require("modprobe")
    for module in modules:
        subprocess.run(["modprobe", "-q", module], capture_output=True, check=False)


def has_ppp() -> bool:
    """The kernel's PPP, with MPPE and PPP over L2TP: ``/dev/ppp`` opens."""
    _modprobe(*PPP_MODULES)
    try:
        fd = os.open("/dev/ppp", os.O_RDWR)
    except OSError:
        return False
    os.close(fd)
    return Path("/sys/module/ppp_mppe").exists() and Path("/sys/module/l2tp_ppp").exists()


def has_esp() -> bool:
    """The kernel's ESP (XFRM), which strongSwan's kernel-netlink installs SAs into."""
    _modprobe(*ESP_MODULES)
    return Path("/sys/module/esp4").exists() and Path("/sys/module/xfrm_user").exists()


def has_wireguard() -> bool:
    """The kernel's WireGuard (``ip link add ... type wireguard``)."""
    _modprobe(WIREGUARD_MODULE)
    return Path(f"/sys/module/{WIREGUARD_MODULE}").exists()


def detect(choice: str | None = None) -> Peers:
    """The peers to run: ``choice`` (or ``$VPNROUTER_LAB_PEERS``) is "auto", "kernel" or "userspace"."""
    choice = choice or os.environ.get("VPNROUTER_LAB_PEERS") or "auto"
    if choice not in CHOICES:
        raise LabError(f"VPN peers {choice!r}: one of {', '.join(CHOICES)}")
    if choice == "userspace":
        return Peers("stand-in", "libipsec", "wireguard-go")
    ppp, esp = has_ppp(), has_esp()
    if choice == "kernel" and not (ppp and esp):
        missing = [what for what, ok in (("/dev/ppp with ppp_mppe and l2tp_ppp", ppp), ("esp4 and xfrm_user", esp))
                   if not ok]
        raise LabError(f"the kernel's VPN peers were asked for, but this kernel lacks {' and '.join(missing)}")
    return Peers("pppd" if ppp else "stand-in", "kernel" if esp else "libipsec",
                 "kernel" if has_wireguard() else "wireguard-go")
