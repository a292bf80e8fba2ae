"""`make bench`'s results folder: every run as JSON, a PNG of its ratios beside the previous run's, and what changed.

    bench-results/2026-11-26T230500Z.json     the figures of one run (as bench.py's --json writes them)
    bench-results/2026-11-26T230500Z.png      vpnrouter's ratios to Linux's NAT and to the Python copier
    bench-results/latest.json, latest.png     copies of the newest

Ratios, not absolute figures, are what a run can be compared on: the machine
and its load change from run to run, and each ratio is taken within one run.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench-results"

RATIOS = (
    ("TCP / kernel", "vpnrouter", "tcp_gbps", "kernel", "tcp_gbps"),
    ("TCP x16 / kernel", "vpnrouter", "tcp16_gbps", "kernel", "tcp16_gbps"),
    ("TCP reverse / kernel", "vpnrouter", "tcp_rev_gbps", "kernel", "tcp_rev_gbps"),
    ("TCP x16 rev / kernel", "vpnrouter", "tcp16_rev_gbps", "kernel", "tcp16_rev_gbps"),
    ("UDP 64 B / kernel", "vpnrouter", "udp64_pps", "kernel", "udp64_pps"),
    ("TCP / copier", "vpnrouter", "tcp_gbps", "copier", "tcp_gbps"),
    ("UDP 64 B / copier", "vpnrouter", "udp64_pps", "copier", "udp64_pps"),
    ("UDP 64 B at the NIC / kernel", "vpnrouter", "udp64_delivered_pps", "kernel", "udp64_delivered_pps"),
    ("UDP 64 B at the NIC / copier", "vpnrouter", "udp64_delivered_pps", "copier", "udp64_delivered_pps"),
    ("raw ESP / UDP", "vpnrouter", "esp16_pps", "vpnrouter", "udp64_pps"),
    ("NAT-T / UDP", "vpnrouter", "natt16_pps", "vpnrouter", "udp64_pps"),
    ("L2TP / UDP", "vpnrouter", "l2tp16_pps", "vpnrouter", "udp64_pps"),
    ("GRE / UDP", "vpnrouter", "gre16_pps", "vpnrouter", "udp64_pps"),
    ("port set / default", "vpnrouter", "udp64_port_set_pps", "vpnrouter", "udp64_default_pps"),
    ("APDM / default", "vpnrouter", "udp64_apdm_pps", "vpnrouter", "udp64_default_pps"),
    ("TCP in a WAN flood / alone", "vpnrouter", "tcp_gbps_flooded", "vpnrouter", "tcp_gbps_before_flood"),
    ("instructions, copier / vpnrouter", "instructions", "copier_out", "instructions", "vpnrouter_out"),
)


def ratios(results: dict) -> dict[str, float]:
    out = {}
    for label, a, key_a, b, key_b in RATIOS:
        try:
            out[label] = results[a][key_a] / results[b][key_b]
        except (KeyError, TypeError, ZeroDivisionError):
            continue
    return out


def previous(folder: Path = RESULTS) -> dict | None:
    runs = sorted(p for p in folder.glob("*.json") if p.name != "latest.json")
    if not runs:
        return None
    try:
        return json.loads(runs[-1].read_text())
    except (OSError, ValueError):
        return None


def changes(now: dict, before: dict | None) -> list[str]:
    """One line per ratio: now, and before if there was a run before."""
    mine, theirs = ratios(now), ratios(before or {})
    lines = []
    for label, value in mine.items():
        old = theirs.get(label)
        lines.append(f"{label:<20}{value:>7.2f}" + (f"   (last run {old:.2f}, {value - old:+.2f})" if old else ""))
    return lines


def plot(now: dict, before: dict | None, path: Path) -> bool:
    """A bar chart of this run's ratios beside the last run's; False where matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    mine, theirs = ratios(now), ratios(before or {})
    labels = list(mine)
    x = range(len(labels))
    fig, ax = plt.subplots(figsize=(11, 4.5))
    ax.bar([i + 0.2 for i in x], [mine[k] for k in labels], width=0.4, label="this run")
    if theirs:
        ax.bar([i - 0.2 for i in x], [theirs.get(k, 0) for k in labels], width=0.4, label="last run", alpha=0.5)
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_xticks(list(x), labels, rotation=30, ha="right")
    ax.set_ylabel("ratio (same run)")
    ax.set_title("vpnrouter in make bench: ratios to Linux's NAT, to the Python copier, and to plain UDP")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def save(results: dict, folder: Path = RESULTS) -> tuple[Path, list[str], bool]:
    """Write this run's JSON and PNG; (the JSON's path, the lines comparing it with the last run, PNG made)."""
    folder.mkdir(exist_ok=True)
    before = previous(folder)
    stamp = time.strftime("%Y-%m-%dT%H%M%SZ", time.gmtime())
    path = folder / f"{stamp}.json"
    path.write_text(json.dumps(results, indent=2))
    shutil.copyfile(path, folder / "latest.json")
    png = path.with_suffix(".png")
    made = plot(results, before, png)
    if made:
        shutil.copyfile(png, folder / "latest.png")
    return path, changes(results, before), made
