"""Long fuzzing campaigns with atheris (coverage-guided, libFuzzer): ``python -m tests.fuzz TARGET``.

    python -m tests.fuzz pptp --runs 100000
    python -m tests.fuzz frame --seconds 3600
    python -m tests.fuzz all --seconds 60       # each target in turn, in its own process

Inputs are those of the hypothesis tests (``targets.run``).  The router's
modules are instrumented for coverage.  An input that fails is written to
``tests/data/fuzz/<target>/crash-<sha1>``, where ``test_fuzz`` replays it
from then on, and the campaign stops with status 1.  libFuzzer's own
artifacts go to a temporary directory.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.splitlines()[0])
    parser.add_argument("target", help="a target of tests.fuzz.targets.TARGETS, or all")
    parser.add_argument("--runs", type=int, help="inputs to try (default: no limit)")
    parser.add_argument("--seconds", type=int, help="time to fuzz for (default: no limit)")
    parser.add_argument("--max-len", type=int, default=512, help="longest input (default 512 bytes)")
    parser.add_argument("--seed", type=int, default=0, help="libFuzzer's seed (0: from the clock)")
    args = parser.parse_args(argv)
    if args.target == "all":        # the router is imported here only in the children, instrumented
        from .targets import TARGETS
        rest = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k != "target" and v is not None]
        return max(subprocess.call([sys.executable, "-m", "tests.fuzz", target, *rest]) for target in TARGETS)
    return campaign(args.target, args.runs, args.seconds, args.max_len, args.seed)


def campaign(target: str, runs: int | None, seconds: int | None, max_len: int, seed: int,
             seeds: list[str] | None = None) -> int:
    """Fuzz ``target``, starting from ``seeds`` (by default its corpus, but for the inputs of open bugs)."""
    import atheris
    if any(name == "router" or name.startswith("router.") for name in sys.modules):
        raise RuntimeError("the router was imported before atheris could instrument it")
    with atheris.instrument_imports(include=["router"]):
        from . import targets
    if target not in targets.TARGETS:
        print(f"no target {target!r}: {', '.join(targets.TARGETS)} or all", file=sys.stderr)
        return 2

    def one_input(data: bytes) -> None:
        try:
            targets.run(target, data)
        except Exception:
            path = targets.save(target, data)
            print(f"\ntests.fuzz: {target} failed; the input is kept in {path}", file=sys.stderr)
            raise

    artifacts = tempfile.mkdtemp(prefix="vpnrouter-fuzz-")
    options = [f"-max_len={max_len}", f"-seed={seed}", f"-artifact_prefix={artifacts}/", "-len_control=0",
               "-print_final_stats=1"]
    if seeds is None:
        seeds = [str(path) for name, path in targets.cases() if name == target]
    if seeds:
        options.append(f"-seed_inputs={','.join(seeds)}")
    if runs is not None:
        options.append(f"-runs={runs}")
    if seconds is not None:
        options.append(f"-max_total_time={seconds}")
    atheris.Setup([sys.argv[0], *options], one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
