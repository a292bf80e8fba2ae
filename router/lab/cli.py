"""``vpnrouter lab``: build the namespace lab, run the router in it, tear it down."""

from __future__ import annotations

import shutil
import signal
import sys
from pathlib import Path
import time

from .topology import Lab, LabError


def add_lab_parser(sub) -> None:
    lab = sub.add_parser("lab", help="build a lab of network namespaces around the router",
                         description="Build a lab of network namespaces (clients on the LAN, servers on the WAN) "
                                     "around the router. Needs root.")
    lab.add_argument("--prefix", default="vr", help="namespace name prefix (default vr)")
    lab.add_argument("--clients", type=int, default=2, help="LAN clients (default 2)")
    lab.add_argument("--servers", type=int, default=1, help="WAN servers (default 1)")
    lab_sub = lab.add_subparsers(title="actions", metavar="ACTION")
    run = lab_sub.add_parser("run", help="build the lab, run the router in it until Ctrl-C, then tear it down")
    run.set_defaults(func=cmd_run)
    up = lab_sub.add_parser("up", help="build the lab and start the router in the background")
    up.set_defaults(func=cmd_up)
    down = lab_sub.add_parser("down", help="stop the router and remove the lab's namespaces")
    down.set_defaults(func=cmd_down)
    lab.set_defaults(func=lambda a: (lab.print_help(), 2)[1])


def _lab(args) -> Lab:
    if not 1 <= args.clients <= 50 or not 1 <= args.servers <= 9:
        raise SystemExit("vpnrouter lab: --clients from 1 to 50, --servers from 1 to 9")
    return Lab(prefix=args.prefix, clients=args.clients, servers=args.servers)


def _build(lab: Lab) -> None:
    lab.up(progress=lambda step: print(f"lab: {step}...", flush=True))
    print("lab: starting the router...", flush=True)
    lab.start_router()


def _command() -> str:
    """How to call vpnrouter from a shell: its full path unless it is on PATH."""
    installed = Path(sys.executable).parent / "vpnrouter"
    on_path = shutil.which("vpnrouter")
    return "vpnrouter" if on_path and Path(on_path).resolve() == installed.resolve() else str(installed)


def _howto(lab: Lab) -> str:
    c1, s1 = lab.client(1), lab.server(1)
    vr = _command()
    return (f"\nThe lab is up: clients {', '.join(lab.client(i) for i in range(1, lab.clients + 1))} on "
            f"192.168.77.0/24, servers {', '.join(lab.server(j) for j in range(1, lab.servers + 1))} on "
            f"198.51.100.0/24, the router between them.\nTry, in another terminal:\n"
            f"  ip netns exec {c1} ping -c 3 {lab.server_ip(1)}\n"
            f"  ip netns exec {s1} iperf3 -s -D && ip netns exec {c1} iperf3 -c {lab.server_ip(1)} -t 5\n"
            f"  {vr} ctl --socket {lab.socket_path} sessions\n"
            f"  {vr} ctl --socket {lab.socket_path} status\n"
            f"  {vr} ctl --socket {lab.socket_path} events\n")


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def cmd_run(args) -> int:
    lab = _lab(args)
    signal.signal(signal.SIGTERM, _interrupt)   # tear down on SIGTERM as on Ctrl-C
    try:
        _build(lab)
        print(_howto(lab) + "\nPress Ctrl-C to stop the router and remove the lab.", flush=True)
        while lab.router_proc.poll() is None:
            time.sleep(0.5)
        print(f"lab: the router exited with status {lab.router_proc.returncode}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except LabError as exc:
        print(f"vpnrouter lab: {exc}", file=sys.stderr)
        return 1
    finally:
        print("lab: tearing down...", flush=True)
        lab.down()


def cmd_up(args) -> int:
    lab = _lab(args)
    try:
        _build(lab)
    except LabError as exc:
        print(f"vpnrouter lab: {exc}", file=sys.stderr)
        lab.down()
        return 1
    lab.router_proc = None  # leave it running
    print(_howto(lab) + f"\nRemove it with: {_command()} lab --prefix {lab.prefix} down")
    return 0


def cmd_down(args) -> int:
    _lab(args).down()
    print("lab: removed")
    return 0
