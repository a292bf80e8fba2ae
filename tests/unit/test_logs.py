"""Log lines that cannot flood (router/logs.py)."""

import logging

from router.logs import Throttle


def test_a_burst_is_one_line_and_the_next_counts_what_was_left_out(caplog):
    clock = [100.0]
    throttle = Throttle(logging.getLogger("vpnrouter.test"), interval=10.0, clock=lambda: clock[0])
    with caplog.at_level(logging.WARNING, logger="vpnrouter.test"):
        logged = [throttle.warning("busy", "refused %s", i) for i in range(1000)]
        throttle.warning("other", "another kind")          # kinds are limited apart
        clock[0] += 10.0
        throttle.warning("busy", "refused %s", "late")
        clock[0] += 30.0
        throttle.warning("busy", "refused %s", "quiet")     # nothing left out since: no count
    assert logged.count(True) == 1
    assert [r.getMessage() for r in caplog.records] == [
        "refused 0", "another kind", "refused late (999 more like it in the last 10 s not logged)", "refused quiet"]
