"""make bench's results folder (tests/perf/report.py): ratios within a run, the comparison with the last run."""

from __future__ import annotations

import json

from tests.perf.report import changes, ratios, save

RUN = {"kernel": {"tcp_gbps": 8.0, "udp64_pps": 80000},
       "copier": {"tcp_gbps": 6.0, "udp64_pps": 60000},
       "vpnrouter": {"tcp_gbps": 4.0, "udp64_pps": 30000, "esp16_pps": 33000, "udp64_default_pps": 40000,
                     "udp64_port_set_pps": 38000}}


def test_ratios_are_taken_within_the_run_and_missing_figures_are_left_out():
    r = ratios(RUN)
    assert r["TCP / kernel"] == 0.5 and r["UDP 64 B / copier"] == 0.5 and r["raw ESP / UDP"] == 1.1
    assert r["port set / default"] == 0.95 and "GRE / UDP" not in r


def test_a_run_is_saved_with_a_png_and_compared_with_the_last(tmp_path):
    first, lines, png = save(RUN, tmp_path)
    assert png and first.with_suffix(".png").stat().st_size > 1000
    assert all("last run" not in line for line in lines)
    faster = json.loads(json.dumps(RUN))
    faster["vpnrouter"]["udp64_pps"] = 36000
    second_lines = changes(faster, json.loads((tmp_path / "latest.json").read_text()))
    assert any(line.startswith("UDP 64 B / copier") and "last run 0.50, +0.10" in line for line in second_lines)
    assert json.loads((tmp_path / "latest.json").read_text()) == RUN
