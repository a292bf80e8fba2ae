#!/usr/bin/python3
"""Checks of images/vm-test/state.sh on what `vpnrouter ctl status --json` and `ctl sessions --json` said.

    state_check.py flows SESSIONS                the test's UDP and TCP sessions are there, one each: prints
                                                 "udp ID OUTSIDE-PORT" and "tcp ID OUTSIDE-PORT"
    state_check.py same BEFORE AFTER [--tcp] [--grown]   the test's flows of BEFORE are in AFTER with the same ids
                                                 and endpoints (the UDP one, and with --tcp the TCP one too); with
                                                 --grown, more packets in on the UDP one than BEFORE says
    state_check.py fresh STATUS                  the router started with the appliance's state file and nothing
                                                 in it (no file yet)
    state_check.py restored STATUS N             it took up the state file: at least N mappings and N sessions,
                                                 nothing left out or refused

Exit status 0 when the check holds; else what is wrong, on stderr.
"""

from __future__ import annotations

import json
import sys

STATE_FILE = "/var/lib/vpnrouter/router.state"
LAN_HOST, WAN_HOST = "192.168.77.10", "198.51.100.10"
UDP = {"proto": "udp", "inside": f"{LAN_HOST}:40000", "remote": f"{WAN_HOST}:7000"}
TCP = {"proto": "tcp", "remote": f"{WAN_HOST}:7001"}


def load(path: str):
    with open(path) as f:
        return json.load(f)


def find(sessions: list[dict], pattern: dict, what: str) -> dict:
    mine = [s for s in sessions if all(s.get(k) == v for k, v in pattern.items())
            and s.get("inside", "").startswith(f"{LAN_HOST}:")]
    if len(mine) != 1:
        raise SystemExit(f"{len(mine)} {what} sessions like {pattern} (one wanted) in {json.dumps(sessions)}")
    return mine[0]


def flows(path: str) -> None:
    sessions = load(path)
    udp, tcp = find(sessions, UDP, "UDP"), find(sessions, TCP, "TCP")
    if tcp["state"] != "established":
        raise SystemExit(f"the TCP session is not established: {tcp}")
    for name, s in (("udp", udp), ("tcp", tcp)):
        print(name, s["id"], s["outside"].rsplit(":", 1)[1])


def same(before_path: str, after_path: str, *options: str) -> None:
    before, after = load(before_path), load(after_path)
    patterns = [(UDP, "UDP")] + ([(TCP, "TCP")] if "--tcp" in options else [])
    for pattern, what in patterns:
        old, new = find(before, pattern, what), find(after, pattern, what)
        for key in ("id", "proto", "inside", "outside", "remote"):
            if old[key] != new[key]:
                raise SystemExit(f"{what} session: {key} was {old[key]!r}, is {new[key]!r}: {old} -> {new}")
        if what == "TCP" and new["state"] != "established":
            raise SystemExit(f"the TCP session is no longer established: {new}")
        if what == "UDP" and "--grown" in options and not new["packets_in"] > old["packets_in"]:
            raise SystemExit(f"no packet in on the UDP session since: {old} -> {new}")
        print(f"{what} session {new['id']}: {new['inside']} {new['outside']} {new['remote']} "
              f"in {new['packets_in']} out {new['packets_out']}")


def state_of(path: str) -> dict:
    state = load(path)["state"]
    if state["file"] != STATE_FILE:
        raise SystemExit(f"the router's state file is {state['file']!r}, not {STATE_FILE}")
    if state["refused"] is not None or state["fresh"]:
        raise SystemExit(f"the state file was refused or left unread: {state}")
    return state


def fresh(path: str) -> None:
    state = state_of(path)
    if state["restored"] is not None:
        raise SystemExit(f"something was restored at the first start: {state}")


def restored(path: str, n: str) -> None:
    state = state_of(path)
    done = state["restored"]
    if done is None:
        raise SystemExit(f"nothing restored: {state}")
    counts = done["counts"]
    if counts.get("mapping", 0) < int(n) or counts.get("session", 0) < int(n):
        raise SystemExit(f"fewer than {n} mappings and sessions restored: {done}")
    if done["dropped"]:
        raise SystemExit(f"records left out: {done}")
    print(json.dumps(done))


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"flows": flows, "same": same, "fresh": fresh, "restored": restored}[command](*args)
