"""The appliance: the image `make image` builds, booted under QEMU and brought up with Vagrant and libvirt.

These tests need root, the host packages `make image-deps` installs, and a few minutes: the image is built
once per session (`make image`, cached under /var/cache/vpnrouter-image, so a rebuild with no change takes
seconds). Where something is missing they fail with the reason; they never skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "images" / "out"
BUILD_TIMEOUT = 40 * 60


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("appliance tests need root (debootstrap, chroot, libvirt): run them as root")


def make(*targets: str, timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    """`make TARGET` from the top of the checkout, with images/image.mk if the top Makefile does not include it."""
    makefile = (ROOT / "Makefile").read_text()
    files = [] if "images/image.mk" in makefile else ["-f", "Makefile", "-f", "images/image.mk"]
    return run(["make", "--no-print-directory", *files, *targets], timeout=timeout, cwd=ROOT, env=env)


def run(cmd: list[str], timeout: float, check: bool = False, **kw) -> subprocess.CompletedProcess:
    """Run, with stdout and stderr together; print what it said (pytest shows it for a failing test)."""
    started = time.monotonic()
    try:
        result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                timeout=timeout, stdin=subprocess.DEVNULL, **kw)
    except subprocess.TimeoutExpired as exc:
        output = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        print(output)
        pytest.fail(f"{' '.join(cmd)}: still running after {timeout:.0f} s")
    print(f"$ {' '.join(cmd)}   ({time.monotonic() - started:.0f} s, exit {result.returncode})\n{result.stdout}")
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited with {result.returncode}:\n{tail(result.stdout)}")
    return result


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


@pytest.fixture(scope="session")
def image() -> Path:
    """The appliance image in images/out, built (or found up to date) by `make image`."""
    require_root()
    result = make("image", timeout=BUILD_TIMEOUT)
    if result.returncode != 0:
        pytest.fail(f"make image failed:\n{tail(result.stdout)}")
    for name in ("vpnrouter.qcow2", "vmlinuz", "initrd.img", "vpnrouter-libvirt.box", "vpnrouter-libvirt.json"):
        if not (OUT / name).is_file():
            pytest.fail(f"make image did not make images/out/{name}")
    return OUT


def need(*programs: str) -> None:
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        pytest.fail(f"missing on this host: {', '.join(missing)} (run `make image-deps`)")
