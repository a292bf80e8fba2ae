"""``vpnrouter lab``: build the namespace lab with its VPN peers, connect sessions, look, tear down."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from ..control.client import ControlError
from .kernel import CHOICES as PEER_CHOICES, Peers
from .topology import STATE_DIR, Lab, LabError, is_router_process
from ..behaviour import PROFILES
from ..config_wan import MODES as WAN_MODES
from .vpns import CONNECT_WAIT, CONNECTABLE, VpnLab

DEFAULT_CLIENTS, DEFAULT_SERVERS = 3, 2
DEMO = (("c1", "pptp", "s1"), ("c2", "l2tp", "s1"), ("c3", "ipsec", "s2"))
"""What `lab demo` (and `make demo`) connects: three clients, two of them to the same server."""
DEMO_MAP_E = (("c1", "wireguard", "s1"), ("c2", "l2tp", "s1"), ("c3", "ipsec", "s2"))
"""Under MAP-E PPTP cannot pass (GRE has no port to share an address by): c1 runs WireGuard instead."""


def add_lab_parser(sub) -> None:
    lab = sub.add_parser("lab", help="a lab of network namespaces with real VPN clients and servers",
                         description="A lab of network namespaces around the router: clients (pptp-linux, an "
                                     "xl2tpd LAC, strongSwan, OpenVPN, WireGuard) on the LAN, servers (pptpd, an "
                                     "xl2tpd LNS, a strongSwan gateway, OpenVPN over UDP and TCP, WireGuard) on "
                                     "the WAN, the router between them. Needs root.")
    lab.add_argument("--prefix", default="vr", help="namespace name prefix (default vr)")
    lab.add_argument("--clients", type=int, help=f"LAN clients (default {DEFAULT_CLIENTS}, or as the lab was made)")
    lab.add_argument("--servers", type=int, help=f"WAN servers (default {DEFAULT_SERVERS}, or as the lab was made)")
    actions = lab.add_subparsers(title="actions", metavar="ACTION")
    up = actions.add_parser("up", help="build the lab, start the router and the VPN servers in the background")
    _add_peers_option(up)
    up.set_defaults(func=cmd_up)
    down = actions.add_parser("down", help="stop everything the lab started and remove it (safe to run twice)")
    down.set_defaults(func=cmd_down)
    status = actions.add_parser("status", help="what is up: namespaces, router, servers, clients, VPN sessions")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=cmd_status)
    connect = actions.add_parser("connect", help="bring a VPN session up from a client",
                                 description="Start a VPN client in a client namespace and wait until the router "
                                             "shows its session up.")
    connect.add_argument("client", help="c1, c2, ... (or 1, 2, ...)")
    connect.add_argument("proto", choices=CONNECTABLE,
                         help="pptp, l2tp, ipsec (through the router's passthrough), or openvpn (UDP), openvpn-tcp, "
                              "wireguard (plain UDP or TCP to the router's NAT)")
    connect.add_argument("server", nargs="?", default="s1", help="s1, s2, ... or its address (default s1)")
    connect.add_argument("--wait", type=float, default=CONNECT_WAIT, metavar="SECONDS",
                         help=f"give up (and stop the client) after this long (default {CONNECT_WAIT:.0f})")
    connect.add_argument("--ipv6", action="store_true",
                         help="openvpn, openvpn-tcp, wireguard: to the server's IPv6 address, from the client's "
                              "SLAAC address (a lab with --wan map-e or ds-lite; the router forwards it through its "
                              "firewall, untranslated)")
    connect.set_defaults(func=cmd_connect)
    ping = actions.add_parser("ping", help="ping through a client's VPN tunnel",
                              description="Ping the server's end of a client's tunnel through it: the PPP peer over "
                                          "the client's PPP interface (real pppd only), the IPsec gateway's inner "
                                          "address from the client's virtual IP, or the OpenVPN server's or "
                                          "WireGuard peer's tunnel address. Exits with ping's status.")
    ping.add_argument("client")
    ping.add_argument("proto", choices=CONNECTABLE)
    ping.add_argument("-c", "--count", type=int, default=3, help="echo requests (default 3)")
    ping.set_defaults(func=cmd_ping)
    disconnect = actions.add_parser("disconnect", help="end a client's VPN session")
    disconnect.add_argument("client")
    disconnect.add_argument("proto", choices=CONNECTABLE)
    disconnect.set_defaults(func=cmd_disconnect)
    check = actions.add_parser("check", help="measure which VPNs work, for one and for two clients, per profile",
                               description="The compatibility matrix, measured: for each profile, connect one "
                                           "client, then a second one to the same server, for PPTP, L2TP, IPsec "
                                           "NAT-T, raw ESP (synthetic), OpenVPN over UDP and TCP and WireGuard "
                                           "(and, on an IPv6 WAN, those three over IPv6), "
                                           "and print protocol x profile with the "
                                           "router's reason for each failure. Needs the lab up; ends the sessions "
                                           "it makes and puts the router's profile back.")
    which = check.add_mutually_exclusive_group()
    which.add_argument("--profile", choices=PROFILES, help="this profile (default: the one in force)")
    which.add_argument("--all-profiles", action="store_true", help="every profile")
    check.add_argument("--wan", dest="check_wan", choices=(*WAN_MODES, "all"),
                       help="measure under this WAN mode (or all three), rebuilding the lab in each and leaving it "
                            "as it was; the profiles apply under ipv4, the one in force under map-e and ds-lite")
    check.add_argument("--json", action="store_true", help="print JSON")
    check.add_argument("--wait", type=float, default=10.0, metavar="SECONDS",
                       help="how long a connect may take before it counts as failed (default 10)")
    check.set_defaults(func=cmd_check)
    demo = actions.add_parser("demo", help="lab up, a PPTP, an L2TP and an IPsec session, then the dashboard",
                              description="Bring the lab up, connect c1 (PPTP; WireGuard under --wan map-e, where "
                                          "PPTP cannot pass) and c2 (L2TP) to s1 and c3 (IPsec) to s2, open the "
                                          "dashboard; on quitting, ask whether to leave it up.")
    _add_peers_option(demo)
    demo.set_defaults(func=cmd_demo)
    run = actions.add_parser("run", help="build the lab, run the router in the foreground until Ctrl-C, tear down")
    _add_peers_option(run)
    run.set_defaults(func=cmd_run)
    lab.set_defaults(func=lambda a: (lab.print_help(), 2)[1])


def _add_wan_option(parser) -> None:
    parser.add_argument("--wan", choices=WAN_MODES, default=None,
                        help="the router's WAN (default: $VPNROUTER_LAB_WAN, else ipv4): ipv4, map-e (an IPv6 "
                             "access link to a MAP-E border relay: a shared IPv4 address and port set, RFC 7597) or "
                             "ds-lite (to a DS-Lite AFTR, whose Linux NAT44 translates, RFC 6333)")


def _add_peers_option(parser) -> None:
    _add_wan_option(parser)
    parser.add_argument("--peers", choices=PEER_CHOICES, default=None,
                        help="VPN peers: the real pppd (MPPE, kernel L2TP) and kernel ESP where the kernel has them "
                             "(auto, the default; or $VPNROUTER_LAB_PEERS), insist on them (kernel), or the pppd "
                             "stand-in and kernel-libipsec (userspace)")


def _lab(args) -> Lab:
    saved = _saved_size(args.prefix)
    clients = args.clients or saved.get("clients") or DEFAULT_CLIENTS
    servers = args.servers or saved.get("servers") or DEFAULT_SERVERS
    if not 1 <= clients <= 50 or not 1 <= servers <= 9:
        raise SystemExit("vpnrouter lab: --clients from 1 to 50, --servers from 1 to 9")
    wan = getattr(args, "wan", None) or saved.get("wan") or os.environ.get("VPNROUTER_LAB_WAN") or "ipv4"
    if wan not in WAN_MODES:
        raise SystemExit(f"vpnrouter lab: VPNROUTER_LAB_WAN={wan!r}: one of {', '.join(WAN_MODES)}")
    return Lab(prefix=args.prefix, clients=clients, servers=servers, wan=wan)


def _saved_size(prefix: str) -> dict:
    try:
        return json.loads((STATE_DIR / prefix / "lab.json").read_text())
    except (OSError, ValueError):
        return {}


def _say(message: str) -> None:
    end = "" if message == "." else "\n"
    print(message if message == "." else f"lab: {message}...", end=end, flush=True)


def _up(lab: Lab, peers: str | None = None, say=None) -> VpnLab:
    say = say or _say
    lab.up(progress=say)
    (lab.state_dir / "lab.json").write_text(json.dumps({"clients": lab.clients, "servers": lab.servers,
                                                        "wan": lab.wan}))
    say("starting the router")
    lab.start_router()
    lab.router_proc = None     # it runs on by itself; `lab down` stops it
    vpns = VpnLab(lab)
    vpns.start_servers(progress=say, peers=peers)
    return vpns


def rebuild(lab: Lab, wan: str, peers: str | None = None, progress=None) -> VpnLab:
    """The lab torn down and made again, the same size, on another WAN (``lab check --wan``); ``progress`` says
    what happens (``lab check`` keeps its stdout for the matrix)."""
    lab.down()
    return _up(Lab(prefix=lab.prefix, clients=lab.clients, servers=lab.servers, wan=wan), peers, progress)


def _command() -> str:
    """How to call vpnrouter from a shell: its full path unless it is on PATH."""
    installed = Path(sys.executable).parent / "vpnrouter"
    on_path = shutil.which("vpnrouter")
    return "vpnrouter" if on_path and Path(on_path).resolve() == installed.resolve() else str(installed)


def _howto(lab: Lab) -> str:
    c1, s1, vr = lab.client(1), lab.server(1), _command()
    prefix = "" if lab.prefix == "vr" else f" --prefix {lab.prefix}"
    return (f"\nThe lab is up: clients {', '.join(lab.client(i) for i in range(1, lab.clients + 1))} on "
            f"192.168.77.0/24, servers {', '.join(lab.server(j) for j in range(1, lab.servers + 1))} on "
            f"198.51.100.0/24 (each running pptpd, an xl2tpd LNS, a strongSwan gateway, OpenVPN over UDP and "
            f"TCP, and WireGuard), the router between.\n"
            f"Try:\n"
            f"  {vr} lab{prefix} connect c1 pptp s1       (or l2tp, ipsec, openvpn, openvpn-tcp, wireguard)\n"
            f"  {vr} lab{prefix} ping c1 pptp; {vr} lab{prefix} disconnect c1 pptp\n"
            f"  {vr} tui --socket {lab.socket_path}\n"
            f"  {vr} ctl --socket {lab.socket_path} sessions\n"
            f"  ip netns exec {c1} ping -c 3 {lab.server_ip(1)}\n"
            f"  ip netns exec {s1} iperf3 -s -D && ip netns exec {c1} iperf3 -c {lab.server_ip(1)} -t 5\n"
            f"{_howto_ipv6(lab, vr, prefix)}"
            f"  {vr} lab{prefix} status\n"
            f"Remove it with: {vr} lab{prefix} down\n")


def _howto_ipv6(lab: Lab, vr: str, prefix: str) -> str:
    """What to try over IPv6, in a lab that has it."""
    if not lab.ipv6:
        return ""
    from .softwire import lan_prefix6
    return (f"  ip netns exec {lab.client(1)} ip -6 addr show scope global    (SLAAC, in {lan_prefix6(lab.wan)})\n"
            f"  ip netns exec {lab.client(1)} ping -6 -c 3 {lab.server_ip6(1)}\n"
            f"  {vr} lab{prefix} connect c1 wireguard s1 --ipv6   (or openvpn, openvpn-tcp)\n")


def cmd_up(args) -> int:
    lab = _lab(args)
    try:
        _up(lab, args.peers)
    except LabError as exc:
        print(f"vpnrouter lab: {exc}", file=sys.stderr)
        lab.down()
        return 1
    print(_howto(lab))
    return 0


def cmd_down(args) -> int:
    _lab(args).down()
    print("lab: removed")
    return 0


def cmd_status(args) -> int:
    lab = _lab(args)
    status = VpnLab(lab).status()
    if args.json:
        print(json.dumps(status, indent=2))
        return 0 if status["namespaces"] else 1
    if not status["namespaces"]:
        print(f"lab {lab.prefix}: down")
        return 1
    router = status["router"]
    print(f"lab {lab.prefix}: {len(status['namespaces'])} namespaces; router "
          f"{'running (pid %d)' % router['pid'] if router['running'] else 'NOT running'}, socket {router['socket']}")
    if status.get("wan", {}).get("mode", "ipv4") != "ipv4":
        wan = status["wan"]
        print(f"  WAN: {wan['mode']} through {wan['provider']} ({wan['endpoint']})")
        if wan.get("nat44"):
            print(f"  the AFTR's NAT44 (Linux's): {wan['nat44']}")
    if status["servers"]:
        print(f"  VPN peers: {Peers.from_dict(status['peers']).describe()}")
    for name, server in status["servers"].items():
        daemons = ", ".join(f"{p} {'up' if server[p] else 'DOWN'}" for p in CONNECTABLE if p in server)
        addresses = ", ".join(filter(None, (server["address"], server.get("address6"))))
        print(f"  {name} {addresses}: {daemons}")
    for name, protos in sorted(status["clients"].items()):
        for proto, entry in protos.items():
            over = " over IPv6" if entry.get("ipv6") else ""
            print(f"  {name} {proto} to {entry['server']}{over}: {'running' if entry['running'] else 'NOT running'}")
    for s in status["vpn_sessions"]:
        print(f"  session {s['id']}: {s['vpn']} {s.get('client')} -> {s['remote']} {s['state']}")
    return 0


def cmd_connect(args) -> int:
    vpns = VpnLab(_lab(args))
    try:
        session = vpns.connect(args.client, args.proto, args.server, progress=_say, wait=args.wait, ipv6=args.ipv6)
    except LabError as exc:
        print(f"\nvpnrouter lab: {exc}", file=sys.stderr)
        return 1
    client = session.get("client") or session["inside"]       # a tunnel with no helper: its NAT session
    if session.get("id") is None:     # no session of the router's (DS-Lite, IPv6): how it was seen up instead
        print(f"\nlab: {args.proto} up: {client} -> {session['remote']}, {session['state']}")
    else:
        print(f"\nlab: {args.proto} up: session {session['id']}, {client} -> {session['remote']}")
    return 0


def cmd_ping(args) -> int:
    try:
        result = VpnLab(_lab(args)).ping(args.client, args.proto, count=args.count)
    except LabError as exc:
        print(f"vpnrouter lab: {exc}", file=sys.stderr)
        return 1
    print(result.stdout, end="")
    print(result.stderr, end="", file=sys.stderr)
    return result.returncode


def cmd_disconnect(args) -> int:
    try:
        VpnLab(_lab(args)).disconnect(args.client, args.proto)
    except LabError as exc:
        print(f"vpnrouter lab: {exc}", file=sys.stderr)
        return 1
    print(f"lab: {args.client} {args.proto} disconnected")
    return 0


def cmd_check(args) -> int:
    from .check import Check, table
    vpns = VpnLab(_lab(args))
    if not vpns.load()["servers"]:
        print("vpnrouter lab: the lab is not up (vpnrouter lab up)", file=sys.stderr)
        return 1
    try:
        profiles = list(PROFILES) if args.all_profiles else [args.profile or vpns.profile()]
        progress = (lambda msg: print(f"lab check: {msg}...", file=sys.stderr, flush=True))
        if args.check_wan:
            from .check import across_wan_modes
            modes = list(WAN_MODES) if args.check_wan == "all" else [args.check_wan]
            results = across_wan_modes(vpns, modes, profiles, args.wait, progress)
        else:
            results = Check(vpns, wait=args.wait, progress=progress).run(profiles)
    except (LabError, ControlError) as exc:
        print(f"vpnrouter lab: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(results, indent=2) if args.json else table(results))
    return 0


def cmd_demo(args) -> int:
    lab = _lab(args)
    try:
        vpns = _up(lab, args.peers)
        if lab.wan == "map-e":
            print("lab: PPTP cannot pass MAP-E (GRE has no port to share an address by): c1 runs WireGuard instead")
        for client, proto, server in (DEMO_MAP_E if lab.wan == "map-e" else DEMO):
            session = vpns.connect(client, proto, server, progress=_say)
            print(f"\nlab: {proto} up from {client} to {server}: session {session['id']}", flush=True)
    except LabError as exc:
        print(f"\nvpnrouter lab: {exc}", file=sys.stderr)
        lab.down()
        return 1
    from tui.app import run as run_tui
    run_tui(str(lab.socket_path))
    if _ask("Leave the lab up?"):
        print(_howto(lab))
        return 0
    _say("tearing down")
    lab.down()
    return 0


def _ask(question: str) -> bool:
    """A yes/no question on the terminal; no terminal means no."""
    if not sys.stdin.isatty():
        return False
    try:
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def cmd_run(args) -> int:
    lab = _lab(args)
    signal.signal(signal.SIGTERM, _interrupt)   # tear down on SIGTERM as on Ctrl-C
    try:
        _up(lab, args.peers)
        print(_howto(lab) + "\nPress Ctrl-C to stop the router and remove the lab.", flush=True)
        pid = lab.router_pid()
        while pid is not None and is_router_process(pid):
            time.sleep(0.5)
        print("lab: the router exited", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except LabError as exc:
        print(f"vpnrouter lab: {exc}", file=sys.stderr)
        return 1
    finally:
        _say("tearing down")
        lab.down()
