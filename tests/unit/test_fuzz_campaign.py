"""A bounded atheris campaign per fuzz target, as CI runs it (``python -m tests.fuzz`` for long ones).

Each target gets ``VPNROUTER_FUZZ_RUNS`` inputs (300 by default; ``make fuzz`` for long ones) from a
fixed seed, in its own process, as many at once as there are CPUs.  A
failing input is kept in ``tests/data/fuzz/<target>/`` by the harness, and
the test fails naming it.
"""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.fuzz.targets import TARGETS

RUNS = int(os.environ.get("VPNROUTER_FUZZ_RUNS", "300"))
ROOT = Path(__file__).parents[2]


def _campaign(target: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tests.fuzz", target, f"--runs={RUNS}", "--seed=1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=3600)


def test_a_bounded_campaign_finds_nothing():
    import atheris  # noqa: F401 - a test extra (pyproject.toml): missing, this fails rather than skips
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = dict(zip(TARGETS, pool.map(_campaign, TARGETS)))
    failed = {target: result.stderr[-3000:] for target, result in results.items() if result.returncode}
    assert not failed, "\n\n".join(f"--- {target}\n{tail}" for target, tail in failed.items())
    for target, result in results.items():
        assert f"Done {RUNS} runs" in result.stderr, f"{target}: {result.stderr[-500:]}"
