"""Which vpnrouter, on which Python: for ``vpnrouter --version``, ``ctl status`` and the state file."""

from __future__ import annotations

import platform
import sys
from importlib import metadata


def package_version() -> str:
    try:
        return metadata.version("vpnrouter")
    except metadata.PackageNotFoundError:
        return "unknown"


def interpreter() -> dict:
    """The Python that runs: its version, the executable, and the installation it comes from (``/usr`` for
    Debian's ``/usr/bin/python3``, which the appliance and the tests run)."""
    return {"version": platform.python_version(), "implementation": platform.python_implementation(),
            "executable": sys.executable, "base_prefix": sys.base_prefix}


def version_line() -> str:
    python = interpreter()
    return (f"vpnrouter {package_version()} on {python['implementation']} {python['version']} "
            f"({python['executable']}, from {python['base_prefix']})")
