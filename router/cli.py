"""``vpnrouter``: run the router, talk to it, or build the lab around it."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from . import config as config_mod
from .behaviour import PROFILES, rule_vpns
from .control import schema
from .control.client import Client, ControlError
from .helpers import registry
from .version import version_line

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


class PrintVersion(argparse.Action):
    """``--version``: the line as it is (argparse's own version action wraps it to the terminal's width)."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_line())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vpnrouter", description=__doc__.strip("` \n").replace("``", ""))
    parser.add_argument("--version", action=PrintVersion, nargs=0,
                        help="print vpnrouter's version and the Python it runs on, and exit")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    run = sub.add_parser("run", help="run the router in the foreground until SIGTERM or SIGINT",
                         description="Run the router in the foreground until SIGTERM or SIGINT. It takes up the "
                                     "tables its state file kept from its last run (see `vpnrouter state show`).")
    run.add_argument("--config", required=True, metavar="FILE", help="TOML configuration file")
    run.add_argument("--fresh", action="store_true",
                     help="start with empty tables: do not read the state file (it is written again on exit)")
    run.add_argument("-v", "--verbose", action="store_true", help="log more")
    run.set_defaults(func=cmd_run)

    state = sub.add_parser("state", help="look into a state file (what a restart brings back)",
                           description="Look into a router's state file: what a restart brings back.")
    state_sub = state.add_subparsers(title="actions", metavar="ACTION")
    show = state_sub.add_parser("show", help="what a state file holds: version, age, ports, counts, records",
                                description="What a state file holds: its format version, when and by what it was "
                                            "written, the ports and addresses it belongs to, and its records, read "
                                            "as a restart would read them: what would be taken up, and what left "
                                            "out and why (with --config, for that configuration; otherwise for the "
                                            "default settings on the file's own ports).")
    show.add_argument("file", metavar="FILE", help="the state file ([state] file, as `ctl status` names it)")
    show.add_argument("--config", metavar="FILE", help="read it as the router with this configuration would")
    show.add_argument("--json", action="store_true", help="print JSON (the records in full, bytes as hex)")
    show.set_defaults(func=cmd_state_show)
    state.set_defaults(func=lambda a: (state.print_help(), EXIT_USAGE)[1])

    ctl = sub.add_parser("ctl", help="query or steer a running router over its control socket",
                         description="Query or steer a running router over its control socket.")
    ctl.add_argument("--socket", default=DEFAULT_SOCKET, metavar="PATH", help=f"control socket (default {DEFAULT_SOCKET})")
    ctl_sub = ctl.add_subparsers(title="requests", metavar="REQUEST")
    status = ctl_sub.add_parser("status", help="switches, counters and uptime")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=cmd_status)
    sessions = ctl_sub.add_parser("sessions", help="the NAT sessions and VPN flows",
                                  description=f"The NAT sessions and VPN flows ({_flow_words(plural=True)}). With "
                                              "--follow, the table and then every change as it happens, like "
                                              "conntrack -E.")
    sessions.add_argument("--json", action="store_true", help="print JSON (with --follow: one JSON object a line)")
    sessions.add_argument("--follow", action="store_true", help="then print changes as they happen, until Ctrl-C")
    sessions.set_defaults(func=cmd_sessions)
    close = ctl_sub.add_parser("close", help=f"end a session, {_flow_words()} by id")
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
    passthrough = ctl_sub.add_parser("passthrough", help="a protocol's passthrough: on, off, single or multi",
                                     description="Turn a protocol's passthrough on or off (off ends its sessions), "
                                                 "or choose single (one LAN client at a time, as a basic home router) "
                                                 "or multi (any number). On brings back the mode it had.")
    passthrough.add_argument("name", choices=registry.names(), help="the protocol")
    passthrough.add_argument("state", choices=("on", "off", "single", "multi"))
    passthrough.set_defaults(func=cmd_passthrough)
    ipv6 = ctl_sub.add_parser("ipv6", help="a VPN's IPv6 switch: let its inbound in to LAN hosts unasked, or not",
                              description="On an IPv6 WAN the router forwards native IPv6 behind a stateful "
                                          "firewall (RFC 6092): what LAN hosts send, and the replies, pass; nothing "
                                          "else comes in. A VPN's IPv6 switch (ipv6_<vpn>, for each VPN whose helper "
                                          "declares what it needs) lets that in unasked, RFC 6092 §3.2.4; off again "
                                          "ends what it let in. Also [wan] ipv6_<vpn> = true.")
    ipv6.add_argument("name", choices=[f"ipv6_{n}" for n in registry.ipv6_switch_vpns()], help="the switch")
    ipv6.add_argument("state", choices=("on", "off"))
    ipv6.set_defaults(func=cmd_ipv6)
    profile = ctl_sub.add_parser("profile", help="behave like another router: apply a named profile",
                                 description="Apply a named profile (NAT mapping, filtering, port assignment, "
                                             "hairpinning, port set, passthrough modes) to new sessions; sessions "
                                             "already up keep what they were made with (but a passthrough the "
                                             "profile turns off ends its sessions, as `ctl passthrough NAME off`).")
    profile.add_argument("name", choices=PROFILES)
    profile.add_argument("--json", action="store_true", help="print the NAT behaviour now in force as JSON")
    profile.set_defaults(func=cmd_profile)
    rules = ctl_sub.add_parser("rules", help="the VPN access rules: list, add, delete",
                               description="The access rules ([[passthrough.rule]]): the first rule whose vpn, "
                                           "client and server match decides; with none, the default action.")
    rules.add_argument("--json", action="store_true", help="print JSON")
    rules.set_defaults(func=cmd_rules)
    rules_sub = rules.add_subparsers(title="changes", metavar="CHANGE")
    add = rules_sub.add_parser("add", help="add a rule (last, or at --position)")
    add.add_argument("action", choices=("allow", "deny"))
    add.add_argument("--vpn", choices=rule_vpns(), default="any", help="default any")
    add.add_argument("--client", default="0.0.0.0/0", help="LAN address or prefix (default: any)")
    add.add_argument("--server", default="0.0.0.0/0", help="WAN address or prefix (default: any)")
    add.add_argument("--position", type=int, help="1 puts it first (default: last)")
    add.set_defaults(func=cmd_rules_add)
    delete = rules_sub.add_parser("del", help="delete rule N (as `ctl rules` numbers them)")
    delete.add_argument("index", type=int)
    delete.set_defaults(func=cmd_rules_del)
    events = ctl_sub.add_parser("events", help="stream events (sessions, switches, drops) as JSON lines")
    events.add_argument("--count", type=int, default=0, help="stop after this many events (default: never)")
    events.set_defaults(func=cmd_events)
    ctl.set_defaults(func=lambda a: (ctl.print_help(), EXIT_USAGE)[1])

    keys = [cls.key for cls in registry.helper_classes()]
    tui = sub.add_parser("tui", help="the live dashboard: sessions, VPNs and passthrough switches",
                         description="The live dashboard: VPN sessions by protocol, all NAT sessions, rates, "
                                     f"events, and the passthrough switches on {_either(keys, 'and')}. Press ? for "
                                     "its keys.")
    tui.add_argument("--socket", default=DEFAULT_SOCKET, metavar="PATH",
                     help=f"the router's control socket (default {DEFAULT_SOCKET})")
    tui.set_defaults(func=cmd_tui)

    from .lab.cli import add_lab_parser
    add_lab_parser(sub)
    return parser


def _either(words, conjunction: str = "or") -> str:
    """"a, b or c"."""
    words = list(words)
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} {conjunction} {words[-1]}"


def _flow_words(plural: bool = False) -> str:
    """"<Title> <flow noun>" of each registered protocol, in words ("..., ... or ...")."""
    words = [f"{cls.title} {cls.flow_noun}{'s' if plural else ''}" for cls in registry.helper_classes()]
    return ", ".join(words) if plural else _either(words)


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
        run(cfg, fresh=args.fresh)
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
    if "python" in status:
        print(f"python      {status['python']['version']} ({status['python']['executable']})")
    if status.get("state"):
        print(f"state       {_state_line(status['state'])}")
    if status.get("dataplane"):
        print(f"dataplane   {_dataplane_line(status['dataplane'])}")
    print("passthrough " + "  ".join(_switch_text(status, name) for name in status["passthrough"]))
    wan = schema.wan_of(status)
    if not wan.get("passthrough_effective", True):
        print(f"{'':<11} no effect: {wan.get('note') or 'the passthrough switches change nothing on this WAN'}")
    print(f"{'wan mode':<11} {_wan_line(wan)}")
    if "nat" in status:
        print(f"nat         {_nat_line(status['nat'])}")
        rules = status["rules"]
        print(f"rules       {rules['count']}, default {rules['default_action']}")
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


def _dataplane_line(dataplane: dict) -> str:
    """Which path forwards: the fast path with its entries, hits and misses by reason, or Python and why."""
    if dataplane.get("path") != "fast":
        why = dataplane.get("why")
        return "Python only" + (f": {why}" if why else "")
    misses = {reason: n for reason, n in (dataplane.get("misses") or {}).items() if n}
    left = sum(misses.values())
    reasons = ", ".join(f"{reason} {n:,}" for reason, n in sorted(misses.items(), key=lambda m: -m[1]))
    return (f"fast path (C): {dataplane.get('entries', 0):,} flows, {dataplane.get('hits', 0):,} frames forwarded, "
            f"{left:,} left to Python" + (f" ({reasons})" if reasons else ""))


def _wan_line(wan: dict) -> str:
    """``status()["wan"]`` in a line: "IPv4", "MAP-E <IPv4> PSID 3/4 bits, 4032 ports, BR <IPv6> (CE <IPv6>)",
    "DS-Lite B4, AFTR <IPv6>" (``schema.STATUS_WAN``)."""
    mode, map_e, ds_lite = wan.get("mode"), wan.get("map_e"), wan.get("ds_lite")
    if mode == "map-e" and isinstance(map_e, dict):
        return (f"MAP-E {map_e.get('ipv4')} PSID {map_e.get('psid')}/{map_e.get('psid_length')} bits, "
                f"{map_e.get('ports')} ports, BR {map_e.get('br')} (CE {map_e.get('ce_ipv6')})")
    if mode == "ds-lite" and isinstance(ds_lite, dict):
        return f"DS-Lite B4, AFTR {ds_lite.get('aftr')}"
    return WAN_NAMES.get(mode, str(mode))


WAN_NAMES = {"ipv4": "IPv4", "map-e": "MAP-E", "ds-lite": "DS-Lite"}


def _state_line(state: dict) -> str:
    """The state file and what the router took up from it at start."""
    if not state.get("file"):
        return "no state file ([state] file is empty)"
    text = state["file"]
    if state.get("fresh"):
        return f"{text}: not read at start (--fresh)"
    if state.get("refused"):
        return f"{text}: ignored at start: {state['refused']}"
    restored = state.get("restored")
    if not restored:
        return f"{text}: none at start"
    from .state import describe
    return f"{text}: {describe(restored)}"


def cmd_state_show(args) -> int:
    from .state_show import show
    return show(args.file, args.config, args.json)


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
    _call(args, "set_passthrough", args.name, args.state)
    print(f"{args.name} passthrough " + _switch_text(_call(args, "status"), args.name).split(" ", 1)[1])
    return 0


def cmd_ipv6(args) -> int:
    switches = _call(args, "set_ipv6_switch", args.name, args.state == "on")
    print(f"{args.name} {'on' if switches[args.name] else 'off'}")
    return 0


def _switch_text(status: dict, name: str) -> str:
    """"<name> on" (multi), "<name> on (single, held by 192.168.77.11)", "<name> off"."""
    if not status["passthrough"][name]:
        return f"{name} off"
    if status.get("passthrough_mode", {}).get(name, "multi") == "multi":
        return f"{name} on"
    holder = status.get("passthrough_holder", {}).get(name)
    return f"{name} on (single{f', held by {holder}' if holder else ''})"


def _nat_line(nat: dict) -> str:
    profile = nat["profile"] + (f" (changed: {', '.join(nat['overrides'])})" if nat.get("overrides") else "")
    port_set = nat["port_set"]
    ports = (f", port set {port_set['size']} ports (offset {port_set['offset']}, PSID {port_set['psid']}/"
             f"{port_set['psid_length']} bits)" if port_set else "")
    return (f"profile {profile}: {nat['mapping']} mapping, {nat['filtering']} filtering, "
            f"{nat['port_assignment']} ports, hairpinning {'on' if nat['hairpinning'] else 'off'}{ports}")


def cmd_profile(args) -> int:
    nat = _call(args, "set_profile", args.name)
    if args.json:
        print(json.dumps(nat, indent=2))
    else:
        print(_nat_line(nat))
        print("new sessions get it; sessions already up keep what they were made with")
    return 0


def _print_rules(view: dict, as_json: bool) -> int:
    if as_json:
        print(json.dumps(view, indent=2))
        return 0
    for rule in view["rules"]:
        print(f"{rule['index']:>3}  {rule['action']:<5}  {rule['vpn']:<5}  client {rule['client']:<18}  "
              f"server {rule['server']:<18}  hits {rule['hits']}")
    print(f"  otherwise {view['default_action']}" + ("" if view["rules"] else " (no rules)"))
    return 0


def cmd_rules(args) -> int:
    return _print_rules(_call(args, "rules"), args.json)


def cmd_rules_add(args) -> int:
    rule = {"vpn": args.vpn, "client": args.client, "server": args.server, "action": args.action}
    params = (rule,) if args.position is None else (rule, args.position)
    return _print_rules(_call(args, "add_rule", *params), args.json)


def cmd_rules_del(args) -> int:
    return _print_rules(_call(args, "del_rule", args.index), args.json)


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
