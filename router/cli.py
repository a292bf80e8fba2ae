"""``vpnrouter``: run the router, talk to it, or build the lab around it."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from . import config as config_mod
from .control.client import Client, ControlError

DEFAULT_SOCKET = "/run/vpnrouter/control.sock"
EXIT_USAGE = 2


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vpnrouter", description=__doc__.strip("` \n").replace("``", ""))
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    run = sub.add_parser("run", help="run the router in the foreground until SIGTERM or SIGINT",
                         description="Run the router in the foreground until SIGTERM or SIGINT.")
    run.add_argument("--config", required=True, metavar="FILE", help="TOML configuration file")
    run.add_argument("-v", "--verbose", action="store_true", help="log more")
    run.set_defaults(func=cmd_run)

    ctl = sub.add_parser("ctl", help="query or steer a running router over its control socket",
                         description="Query or steer a running router over its control socket.")
    ctl.add_argument("--socket", default=DEFAULT_SOCKET, metavar="PATH", help=f"control socket (default {DEFAULT_SOCKET})")
    ctl_sub = ctl.add_subparsers(title="requests", metavar="REQUEST")
    status = ctl_sub.add_parser("status", help="switches, counters and uptime")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=cmd_status)
    sessions = ctl_sub.add_parser("sessions", help="the NAT sessions and VPN flows",
                                  description="The NAT sessions and VPN flows (PPTP calls, L2TP tunnels, IPsec "
                                              "associations). With --follow, the table and then every change as "
                                              "it happens, like conntrack -E.")
    sessions.add_argument("--json", action="store_true", help="print JSON (with --follow: one JSON object a line)")
    sessions.add_argument("--follow", action="store_true", help="then print changes as they happen, until Ctrl-C")
    sessions.set_defaults(func=cmd_sessions)
    close = ctl_sub.add_parser("close", help="end a session, PPTP call, L2TP tunnel or IPsec association by id")
    close.add_argument("id", type=int, help="the id `ctl sessions` shows")
    close.set_defaults(func=cmd_close)
    capture = ctl_sub.add_parser("capture", help="copy a session's frames into a pcap file",
                                 description="Copy the frames of one session (as the router forwards them) into a "
                                             "pcap file that tshark and Wireshark open.")
    capture.add_argument("id", type=int, help="the id `ctl sessions` shows")
    capture.add_argument("-w", "--write", required=True, metavar="FILE", help="the pcap file to write")
    capture.add_argument("--count", type=int, default=100, help="stop after this many frames (default 100)")
    capture.add_argument("--seconds", type=float, default=10.0, help="stop after this many seconds (default 10)")
    capture.set_defaults(func=cmd_capture)
    passthrough = ctl_sub.add_parser("passthrough", help="turn a protocol's passthrough on or off")
    passthrough.add_argument("name", choices=config_mod.PASSTHROUGH_NAMES)
    passthrough.add_argument("state", choices=("on", "off"))
    passthrough.set_defaults(func=cmd_passthrough)
    events = ctl_sub.add_parser("events", help="stream events (sessions, switches, drops) as JSON lines")
    events.add_argument("--count", type=int, default=0, help="stop after this many events (default: never)")
    events.set_defaults(func=cmd_events)
    ctl.set_defaults(func=lambda a: (ctl.print_help(), EXIT_USAGE)[1])

    tui = sub.add_parser("tui", help="the live dashboard: sessions, VPNs and passthrough switches",
                         description="The live dashboard: VPN sessions by protocol, all NAT sessions, rates, "
                                     "events, and the passthrough switches on p, l and i. Press ? for its keys.")
    tui.add_argument("--socket", default=DEFAULT_SOCKET, metavar="PATH",
                     help=f"the router's control socket (default {DEFAULT_SOCKET})")
    tui.set_defaults(func=cmd_tui)

    from .lab.cli import add_lab_parser
    add_lab_parser(sub)
    return parser


def cmd_run(args) -> int:
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s")
    try:
        cfg = config_mod.load(args.config)
    except config_mod.ConfigError as exc:
        print(f"vpnrouter: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from .runtime.loop import run
    from .runtime.tap import TapError
    try:
        run(cfg)
    except TapError as exc:
        print(f"vpnrouter: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"vpnrouter: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return 0


def _call(args, method: str, *params):
    try:
        with Client(args.socket) as client:
            return client.call(method, *params)
    except ControlError as exc:
        print(f"vpnrouter ctl: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def cmd_status(args) -> int:
    status = _call(args, "status")
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    print(f"uptime      {status['uptime']:.0f} s")
    print("passthrough " + "  ".join(f"{k} {'on' if v else 'off'}" for k, v in status["passthrough"].items()))
    for name, port in status["ports"].items():
        print(f"{name:<11} {port['address']}  mac {port['mac']}  tap {port['tap']}")
    print(f"sessions    {status['sessions']}  (limit {status['limits']['sessions']})")
    print("counters")
    for name, value in status["counters"].items():
        if value or not name.startswith("drop_"):
            print(f"  {name:<28} {value}")
    return 0


COLUMNS = ("proto", "inside", "outside", "remote", "state", "idle", "packets_out", "packets_in", "bytes_out",
           "bytes_in", "vpn", "id")   # new columns go at the end: scripts read the table by position


def cmd_sessions(args) -> int:
    if args.follow:
        return _follow(args)
    sessions = _call(args, "sessions")
    if args.json:
        print(json.dumps(sessions, indent=2))
        return 0
    _print_table(sessions)
    return 0


def _print_table(sessions: list) -> None:
    rows = [[str(s.get(c, "")) for c in COLUMNS] for s in sessions]
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(COLUMNS)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(COLUMNS, widths)))
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
    if not rows:
        print("(no sessions)")


FOLLOW_TAGS = {"session_opened": "NEW", "session_closed": "DESTROY", "sessions_updated": "UPDATE",
               "switch_changed": "SWITCH", "vpn": "VPN", "packet_dropped": "DROP"}


def _follow(args) -> int:
    """The table, then each change as one line (conntrack -E style) or one JSON object."""
    try:
        with Client(args.socket, timeout=None) as client:
            for kind, data in client.follow():
                if args.json:
                    print(json.dumps({"snapshot": data} if kind == "snapshot" else {kind: data}), flush=True)
                elif kind == "snapshot":
                    _print_table(data)
                elif kind == "gap":
                    print(f"[RESYNC] events {data['expected']}..{data['got'] - 1} were missed", flush=True)
                else:
                    for line in _event_lines(data):
                        print(line, flush=True)
    except ControlError as exc:
        print(f"vpnrouter ctl: {exc}", file=sys.stderr)
        return 1
    return 0


def _event_lines(event: dict) -> list[str]:
    tag = FOLLOW_TAGS.get(event["type"], event["type"].upper())
    if event["type"] in ("session_opened", "session_closed"):
        s = event["session"]
        tail = f" reason={event['reason']}" if "reason" in event else ""
        vpn = f" vpn={s['vpn']}" if s.get("vpn") else ""
        return [f"[{tag}] {s['proto']} {s['inside']} {s['outside']} {s['remote']} id={s['id']}{vpn}{tail}"]
    if event["type"] == "sessions_updated":
        return [f"[{tag}] id={u['id']} state={u['state']} packets={u['packets_out']}/{u['packets_in']} "
                f"bytes={u['bytes_out']}/{u['bytes_in']}" for u in event["sessions"]]
    if event["type"] == "switch_changed":
        return [f"[{tag}] {event['name']} {'on' if event['on'] else 'off'}"]
    if event["type"] == "packet_dropped":
        return [f"[{tag}] {event['reason']} {event['port']} {event['summary']}"]
    rest = " ".join(f"{k}={v}" for k, v in event.items() if k not in ("type", "time", "seq", "vpn", "event"))
    return [f"[{tag}] {event.get('vpn')} {event.get('event')} {rest}"]


def cmd_close(args) -> int:
    _call(args, "close_session", args.id)
    print(f"closed {args.id}")
    return 0


def cmd_capture(args) -> int:
    from .control.pcap import PcapWriter
    if args.count < 1 or args.seconds <= 0:
        print("vpnrouter ctl: --count and --seconds must be greater than zero", file=sys.stderr)
        return EXIT_USAGE
    try:
        writer = PcapWriter(args.write)
    except OSError as exc:
        print(f"vpnrouter ctl: cannot write {args.write}: {exc.strerror}", file=sys.stderr)
        return 1
    try:
        with writer, Client(args.socket, timeout=args.seconds + 10) as client:
            for time, frame in client.capture(args.id, args.count, args.seconds):
                writer.write(time, frame)
                print(f"\r{writer.count} frames", end="", file=sys.stderr, flush=True)
    except ControlError as exc:
        print(f"\nvpnrouter ctl: {exc}", file=sys.stderr)
        return 1
    print(f"\r{writer.count} frames written to {args.write}", file=sys.stderr)
    return 0


def cmd_tui(args) -> int:
    from tui.app import run
    return run(args.socket)


def cmd_passthrough(args) -> int:
    switches = _call(args, "set_passthrough", args.name, args.state == "on")
    print(f"{args.name} passthrough {'on' if switches[args.name] else 'off'}")
    return 0


def cmd_events(args) -> int:
    try:
        with Client(args.socket, timeout=None) as client:
            for n, event in enumerate(client.events(), 1):
                print(json.dumps(event), flush=True)
                if args.count and n >= args.count:
                    break
    except ControlError as exc:
        print(f"vpnrouter ctl: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
