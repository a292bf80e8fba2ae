"""Every test runs on Debian 12's own Python, /usr/bin/python3: the interpreter the appliance and every user
run. Another one (a pyenv build first on PATH, say) behaves differently in ways that matter here (3.11.7
pickles enum members otherwise than 3.11.2), so a run on it is refused outright, never taken as a pass."""

from __future__ import annotations

import os
import sys

import pytest

DEBIAN_PYTHON = "/usr/bin/python3"


def pytest_configure(config) -> None:
    running = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    if running != os.path.realpath(DEBIAN_PYTHON) or sys.base_prefix != "/usr":
        raise pytest.UsageError(
            f"the tests run on Debian's {DEBIAN_PYTHON} ({os.path.realpath(DEBIAN_PYTHON)}), not on {running} "
            f"(base prefix {sys.base_prefix}): use `make test`, whose .venv is made from it")
