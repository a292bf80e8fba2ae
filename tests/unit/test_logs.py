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
        "refused 0", "another kind", "refused late (999 more like it not logged)", "refused quiet"]


def test_a_burst_allows_that_many_lines_a_window():
    clock = [0.0]
    throttle = Throttle(logging.getLogger("vpnrouter.test"), interval=10.0, burst=3, clock=lambda: clock[0])
    assert [throttle.log(logging.INFO, "call", "call %s", i) for i in range(5)] == [True] * 3 + [False] * 2
    clock[0] = 10.0
    assert throttle.log(logging.INFO, "call", "call %s", 5)


def test_vpn_events_and_changes_are_lines_and_drops_only_debug():
    from router.dataplane.events import PacketDropped, SwitchChanged, VpnEvent
    from router.logs import event_line
    level, kind, text = event_line(VpnEvent(1.0, "pptp", "call_up", (("client", "192.168.77.11"), ("call_id", 5))))
    assert (level, kind, text) == (logging.INFO, "pptp:call_up", "pptp call_up: client=192.168.77.11 call_id=5")
    assert event_line(SwitchChanged(1.0, "l2tp", False, "off"))[2] == "passthrough l2tp off"
    assert event_line(PacketDropped(1.0, "unsolicited", "wan", "a -> b"))[0] == logging.DEBUG
