"""The lab's IPv4-in-IPv6 softwire end (RFC 2473): a MAP-E Border Relay or a DS-Lite AFTR, in userspace where
the kernel has no ``ip6_tunnel`` (the build machines), the kernel's ``ip6tnl`` where it has (the VM).

    router (CE or B4) ── br-v6 ──veth── <prefix>-br | <prefix>-aftr ──veth── br-wan ── servers
    2001:db8:ffff::2                    2001:db8:ffff::1    198.51.100.2, 2001:db8:5::1

The endpoint (``python -m router.lab.softwire br|aftr [options]``; ``--help`` lists them) joins two sides:

* IPv6: a raw ``socket(AF_INET6, SOCK_RAW, IPPROTO_IPIP)`` bound to the tunnel address.  Linux gives it every
  IPv6 packet with next header 4 sent there, without the IPv6 header, with the sender's address (and, since a
  raw socket took it, sends no ICMPv6 Parameter Problem); ``sendto(ipv4, (dst, 0))`` gets the IPv6 header, ND,
  routing and fragmentation from the kernel.  Verified on the build machines' 6.18 kernel, which has no
  ip6_tunnel, so no AF_PACKET fallback is needed.
* IPv4: a TUN whose MTU is the IPv6 link's less 40 (RFC 2473 §7.1, RFC 7597 §8.3.1), so the namespace's kernel
  answers larger DF packets with "fragmentation needed".  The kernel routes, and for the AFTR does NAT44; the
  endpoint only picks the IPv6 address an IPv4 packet goes to, and whether one from IPv6 may in.

``br`` (RFC 7597 §8): IPv4 to the Rule IPv4 prefix goes to the MAP IPv6 address of the CE that owns its
destination address and port; from a CE, only IPv4 whose source address and port are that CE's (§8.1).
``aftr`` (RFC 6333 §6): IPv4 from a B4 goes in and teaches which B4 holds its source address; IPv4 to that
address goes back to that B4.  What cannot be mapped is counted (``drop_<reason>``) and dropped, with at most
one line a second per reason on stderr.

It prints ``ready`` once both sides are open.  SIGTERM or SIGINT ends it cleanly.  ``--stats FILE`` gets the
counters as JSON (``{"mode", "counters", ...}``) at start, every half second while they change, at SIGUSR1 and
at exit; SIGUSR1 without ``--stats`` prints them on stderr.

The rest of the module builds the namespaces around it (``build_br``, ``build_aftr``) for topology.py, with the
kernel's ``ip6tnl`` in the endpoint's place where there is one (``_kernel_softwire``): the same device name, MTU
and routes.  The kernel's tunnel has one remote end, so its BR serves the lab's one CE; the userspace BR maps
any number of CEs by address and port (RFC 7597 §5.3).  ``endpoint_kind`` says which runs.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, OrderedDict
from enum import IntEnum, StrEnum
from functools import lru_cache
from ipaddress import IPv4Address, IPv6Address, IPv6Network, ip_network
from pathlib import Path
from typing import TYPE_CHECKING

import pytun

from ..mape import IPV4_MINIMUM_HEADER, MapRule, ce_address_for, derive_ce, encapsulated_mtu
from .tools import LabError, stop_process

if TYPE_CHECKING:           # topology.py imports this module: no import back at run time
    from .topology import Lab

BR, AFTR = "br", "aftr"
ACCESS_BRIDGE = "br-v6"
"""The IPv6 access link: a bridge in the switch namespace, for the router's WAN TAP and the BR's or AFTR's veth."""
ACCESS_PREFIX = "2001:db8:ffff::/64"
TUNNEL_ADDRESS = PROVIDER6 = "2001:db8:ffff::1"
"""The BR's and the AFTR's address: the softwires' end, and the router's IPv6 gateway."""
ROUTER_LINK6 = "2001:db8:ffff::2"
SERVERS6_PREFIX = "2001:db8:5::/64"
GATEWAY6 = "2001:db8:5::1"
"""The BR's or AFTR's address on br-wan, for servers reached over IPv6."""
GATEWAY4 = "198.51.100.2"
"""The BR's or AFTR's address on br-wan: the servers' route to the MAP domain, and the AFTR's NAT44 address."""
RULE_IPV6_PREFIX = "2001:db8:a::/48"
RULE_IPV4_PREFIX = "198.51.100.192/28"
EA_BITS = 8
PSID_OFFSET = 6
END_USER_PREFIX = "2001:db8:a:2300::/56"
"""The router's delegation: EA bits 0x23, so IPv4 198.51.100.194 (suffix 2) and PSID 3 (RFC 7597 §5.2)."""
MAP_IPV4 = "198.51.100.194"
"""The router's shared IPv4 address under MAP-E, which END_USER_PREFIX gives it."""
DELEGATED_PREFIX_DS_LITE = "2001:db8:b:100::/56"
"""The router's delegated prefix under DS-Lite (``[wan] delegated_prefix``), which the AFTR routes to it."""
DELEGATED_PREFIXES = {"map-e": END_USER_PREFIX, "ds-lite": DELEGATED_PREFIX_DS_LITE}
"""Under MAP-E the End-user prefix is the delegation (RFC 7597 §5): the router numbers its LAN from it too."""
LAN_SUBNET = 1
"""Which /64 of the delegated prefix the router's LAN gets."""
B4_LAN_PREFIX = "192.168.77.0/24"
"""The lab's LAN (topology.LAN_PREFIX): a B4 does no NAT (RFC 6333 §5), so these are the inner sources."""
AFTR_IPV4 = "192.0.0.1"
"""The AFTR's well-known address, the B4's being 192.0.0.2 (RFC 6333 §5.7)."""
TUN_NAME = "softwire0"
ACCESS_DEV, WAN_DEV = "access", "wan"
"""The namespace's veths to br-v6 and to br-wan."""
LINK_MTU = 1500
TUN_MTU = encapsulated_mtu(LINK_MTU)
BINDINGS = 4096
STATS_INTERVAL = 0.5
LOG_INTERVAL = 1.0
ACCESS_MAC, WAN_MAC = "02:00:5f:ff:00:01", "02:00:5f:ff:00:02"
"""The veths' MACs, the same in the BR and the AFTR: the router's and the servers' neighbour caches stay right
when one is built in place of the other, as they would not with new random MACs behind the same addresses."""
NAMESPACE_SYSCTLS = ("net.ipv6.conf.all.disable_ipv6=0", "net.ipv6.conf.default.disable_ipv6=0",
                     "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")


class IpProtocol(IntEnum):
    ICMP = 1
    TCP = 6
    UDP = 17


class IcmpType(IntEnum):
    """RFC 792's types that carry a port (the Identifier) or quote a datagram that has one."""
    ECHO_REPLY = 0
    DESTINATION_UNREACHABLE = 3
    ECHO_REQUEST = 8
    TIME_EXCEEDED = 11
    PARAMETER_PROBLEM = 12


ICMP_QUERIES = frozenset({IcmpType.ECHO_REPLY, IcmpType.ECHO_REQUEST})
"""Their Identifier stands for the port (RFC 7597 §8.2)."""
ICMP_ERRORS = frozenset({IcmpType.DESTINATION_UNREACHABLE, IcmpType.TIME_EXCEEDED, IcmpType.PARAMETER_PROBLEM})
"""They quote the IP header and first 64 bits of the datagram at fault (RFC 792), enough for its ports."""


class Drop(StrEnum):
    """Why a packet was not passed on; each is a counter, ``drop_<reason>``."""
    TRUNCATED = "truncated"
    """Shorter than 20 bytes, or than its header or total length says."""
    NOT_IPV4 = "not_ipv4"
    NO_PORT = "no_port"
    """No port to find a CE by: GRE, ESP, a non-first fragment, an ICMP type without Identifier."""
    NO_CE = "no_ce"
    """To an address or port no CE holds (RFC 7597 §5.1: ports with A = 0 belong to none)."""
    SPOOFED = "spoofed"
    """From a CE, with an IPv4 source address and port that are not that CE's (RFC 7597 §8.1)."""
    UNKNOWN_B4 = "unknown_b4"
    """To an address no B4 has sent from."""


class Dropped(Exception):
    def __init__(self, reason: Drop, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class Side(IntEnum):
    """Which end of a datagram, and so which of its two ports (the source port comes first)."""
    SOURCE = 0
    DESTINATION = 1

    @property
    def other(self) -> Side:
        return Side(1 - self)


def _header_length(packet: bytes) -> int:
    """The IPv4 header's length (RFC 791 §3.1: IHL words of 32 bits), once it is sure the header is all there."""
    if len(packet) < IPV4_MINIMUM_HEADER:
        raise Dropped(Drop.TRUNCATED, f"{len(packet)} bytes")
    version, ihl = packet[0] >> 4, packet[0] & 15
    if version != 4 or ihl < 5:
        raise Dropped(Drop.NOT_IPV4, f"version {version}, IHL {ihl}")
    if len(packet) < ihl * 4:
        raise Dropped(Drop.TRUNCATED, f"{len(packet)} bytes, IHL {ihl}")
    return ihl * 4


def inner_ipv4(data: bytes) -> bytes:
    """The IPv4 packet ``data`` holds, cut to its total length; ``Dropped`` if there is none."""
    total_length = int.from_bytes(data[2:4], "big") if len(data) >= 4 else 0
    if total_length < _header_length(data):
        raise Dropped(Drop.NOT_IPV4, f"total length {total_length}")
    if len(data) < total_length:
        raise Dropped(Drop.TRUNCATED, f"{len(data)} bytes, total length {total_length}")
    return data[:total_length]


def port_of(packet: bytes, side: Side, quoted: bool = False) -> int:
    """The port of ``side`` that picks a CE (RFC 7597 §5.1): TCP's or UDP's; an ICMP echo's Identifier (§8.2);
    for an ICMP error, the other side's port of the datagram it quotes, which was the CE's (sent by it when
    the error goes to it).  ``Dropped`` (no_port) for everything else: GRE, ESP, non-first fragments."""
    header_length = _header_length(packet)
    if int.from_bytes(packet[6:8], "big") & 0x1FFF:
        raise Dropped(Drop.NO_PORT, "a non-first fragment")
    protocol, l4 = packet[9], packet[header_length:]
    if protocol in (IpProtocol.TCP, IpProtocol.UDP) and len(l4) >= 4:
        return int.from_bytes(l4[2 * side:2 * side + 2], "big")
    if protocol == IpProtocol.ICMP and len(l4) >= 8 and l4[0] in ICMP_QUERIES:
        return int.from_bytes(l4[4:6], "big")
    if protocol == IpProtocol.ICMP and len(l4) >= 8 and l4[0] in ICMP_ERRORS and not quoted:
        return port_of(l4[8:], side.other, quoted=True)
    icmp_type = f", ICMP type {l4[0]}" if protocol == IpProtocol.ICMP and l4 else ""
    raise Dropped(Drop.NO_PORT, f"protocol {protocol}{icmp_type}")


_ce_address = lru_cache(maxsize=4096)(ce_address_for)


class BorderRelay:
    """A MAP-E BR's decisions under one Basic Mapping Rule (RFC 7597 §8)."""
    mode = BR

    def __init__(self, rule: MapRule) -> None:
        self.rule = rule

    def from_ipv6(self, source: IPv6Address, payload: bytes) -> bytes:
        """The IPv4 packet a CE sent, if its source address and port are that CE's: §8.1's check of the source
        IPv6 address against the CE address the rule gives the inner source address and port."""
        packet = inner_ipv4(payload)
        ipv4 = IPv4Address(packet[12:16])
        try:
            owner = _ce_address(self.rule, ipv4, port_of(packet, Side.SOURCE))
        except ValueError as error:
            raise Dropped(Drop.SPOOFED, f"from {source}: {error}") from None
        if owner != source:
            raise Dropped(Drop.SPOOFED, f"{ipv4} from {source}, not from its CE {owner}")
        return packet

    def to_ipv6(self, packet: bytes) -> IPv6Address:
        """The MAP IPv6 address of the CE that owns the destination address and port (§5.3, §8.2)."""
        packet = inner_ipv4(packet)
        ipv4 = IPv4Address(packet[16:20])
        try:
            return _ce_address(self.rule, ipv4, port_of(packet, Side.DESTINATION))
        except ValueError as error:
            raise Dropped(Drop.NO_CE, str(error)) from None

    def details(self) -> dict:
        return {"rule": f"{self.rule.ipv6_prefix} {self.rule.ipv4_prefix} ea {self.rule.ea_bits_length} "
                        f"offset {self.rule.psid_offset}"}


class Aftr:
    """A DS-Lite AFTR's softwire end (RFC 6333 §6).  The NAT44 is the kernel's, keyed on IPv4 alone: unlike
    §6.6's extended binding table, two B4s with the same private address would collide (the lab has one B4)."""
    mode = AFTR

    def __init__(self, size: int = BINDINGS) -> None:
        self.size = size
        self.b4s: OrderedDict[bytes, IPv6Address] = OrderedDict()
        """Inner IPv4 source -> the B4's IPv6 address, the oldest first."""

    def from_ipv6(self, source: IPv6Address, payload: bytes) -> bytes:
        packet = inner_ipv4(payload)
        self.b4s[packet[12:16]] = source
        self.b4s.move_to_end(packet[12:16])
        if len(self.b4s) > self.size:
            self.b4s.popitem(last=False)
        return packet

    def to_ipv6(self, packet: bytes) -> IPv6Address:
        packet = inner_ipv4(packet)
        try:
            return self.b4s[packet[16:20]]
        except KeyError:
            raise Dropped(Drop.UNKNOWN_B4, f"no B4 has sent from {IPv4Address(packet[16:20])}") from None

    def details(self) -> dict:
        return {"bindings": len(self.b4s)}


class Endpoint:
    """The raw socket, the TUN, and the loop that moves packets between them as ``softwire`` decides."""

    def __init__(self, softwire: BorderRelay | Aftr, tun_fd: int, sock: socket.socket, stats: Path | None) -> None:
        self.softwire, self.tun_fd, self.sock, self.stats = softwire, tun_fd, sock, stats
        self.counters: Counter[str] = Counter()
        self.logged: dict[str, float] = {}
        """When each drop reason or error was last logged."""
        self.reported: dict | None = None
        self.running = True

    def from_ipv6(self) -> None:
        try:
            payload, (source, *_) = self.sock.recvfrom(65535)
        except BlockingIOError:
            return
        try:
            os.write(self.tun_fd, self.softwire.from_ipv6(IPv6Address(source), payload))
        except Dropped as drop:
            return self.drop(drop)
        except OSError as error:
            return self.error("tun_write_errors", error)
        self.counters["decapsulated"] += 1

    def from_ipv4(self) -> None:
        try:
            packet = os.read(self.tun_fd, 65535)
        except BlockingIOError:
            return
        try:
            self.sock.sendto(packet, (str(self.softwire.to_ipv6(packet)), 0))
        except Dropped as drop:
            return self.drop(drop)
        except OSError as error:
            return self.error("send_errors", error)
        self.counters["encapsulated"] += 1

    def drop(self, drop: Dropped) -> None:
        self.counters[f"drop_{drop.reason}"] += 1
        self.log(drop.reason, f"dropped {drop}")

    def error(self, counter: str, error: OSError) -> None:
        self.counters[counter] += 1
        self.log(counter, f"{counter}: {error}")

    def log(self, key: str, line: str) -> None:
        """One line a second at most per ``key``."""
        now = time.monotonic()
        if now - self.logged.get(key, -LOG_INTERVAL) >= LOG_INTERVAL:
            self.logged[key] = now
            print(f"softwire {self.softwire.mode}: {line}", file=sys.stderr, flush=True)

    def on_signals(self, wakeup_fd: int) -> None:
        for signum in os.read(wakeup_fd, 64):
            if signum == signal.SIGUSR1:
                self.report(asked=True)
            else:
                self.running = False

    def snapshot(self) -> dict:
        return {"mode": self.softwire.mode, "counters": dict(self.counters), **self.softwire.details()}

    def report(self, asked: bool = False) -> None:
        """The counters to ``--stats`` (atomically), or to stderr when asked for and there is no file."""
        self.reported = self.snapshot()
        text = json.dumps(self.reported, sort_keys=True)
        if self.stats is None:
            if asked:
                print(text, file=sys.stderr, flush=True)
            return
        partial = self.stats.with_name(self.stats.name + ".new")
        partial.write_text(text + "\n")
        os.replace(partial, self.stats)

    def run(self, wakeup_fd: int) -> None:
        handlers = {self.sock.fileno(): self.from_ipv6, self.tun_fd: self.from_ipv4,
                    wakeup_fd: lambda: self.on_signals(wakeup_fd)}
        poller = select.poll()
        for fd in handlers:
            poller.register(fd, select.POLLIN)
        self.report()
        due = time.monotonic() + STATS_INTERVAL
        while self.running:
            for fd, _ in poller.poll(STATS_INTERVAL * 1000):
                handlers[fd]()
            if time.monotonic() >= due:
                due = time.monotonic() + STATS_INTERVAL
                if self.snapshot() != self.reported:
                    self.report()
        self.report()


def open_tun(name: str, mtu: int) -> pytun.TunTapDevice:
    """The IPv4 side: a TUN without packet information, up, its MTU the tunnel's (RFC 2473 §7.1).  IPv6 is off on
    it, or the kernel would send its router solicitations and MLD reports into it."""
    tun = pytun.TunTapDevice(name=name, flags=pytun.IFF_TUN | pytun.IFF_NO_PI)
    Path(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6").write_text("1")
    tun.mtu = mtu
    tun.up()
    os.set_blocking(tun.fileno(), False)
    return tun


def open_raw_socket(address: str) -> socket.socket:
    """The IPv6 side: IPv4-in-IPv6 (next header 4, RFC 2473 §5) to and from ``address``."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_IPIP)
    sock.bind((address, 0))
    sock.setblocking(False)
    return sock


def signal_wakeup() -> int:
    """A pipe that SIGTERM, SIGINT and SIGUSR1 write their numbers to (``signal.set_wakeup_fd``), for poll."""
    read_fd, write_fd = os.pipe()
    for fd in (read_fd, write_fd):
        os.set_blocking(fd, False)
    signal.set_wakeup_fd(write_fd)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(signum, lambda *_: None)
    return read_fd


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m router.lab.softwire",
                                     description="The lab's IPv4-in-IPv6 softwire end: a MAP-E BR or a DS-Lite AFTR.")
    modes = parser.add_subparsers(dest="mode", required=True)
    br = modes.add_parser(BR, help="MAP-E Border Relay (RFC 7597 §8)")
    br.add_argument("--rule-ipv6-prefix", default=RULE_IPV6_PREFIX, help="the BMR's Rule IPv6 prefix")
    br.add_argument("--rule-ipv4-prefix", default=RULE_IPV4_PREFIX, help="the BMR's Rule IPv4 prefix")
    br.add_argument("--ea-bits", type=int, default=EA_BITS, help="the BMR's EA-bits length")
    br.add_argument("--psid-offset", type=int, default=PSID_OFFSET, help="the BMR's PSID offset (a bits)")
    aftr = modes.add_parser(AFTR, help="DS-Lite AFTR's softwire end (RFC 6333 §6)")
    aftr.add_argument("--bindings", type=int, default=BINDINGS,
                      help="how many B4 addresses (inner IPv4 -> IPv6) to remember, the oldest going first")
    for mode in (br, aftr):
        mode.add_argument("--address", default=TUNNEL_ADDRESS, help="the local IPv6 address softwires end at")
        mode.add_argument("--tun", default=TUN_NAME, help="the TUN device to make")
        mode.add_argument("--link-mtu", type=int, default=LINK_MTU,
                          help="the IPv6 link's MTU; the TUN's is 40 bytes less (RFC 2473 §7.1)")
        mode.add_argument("--stats", type=Path, help="where to write the counters as JSON: at start, every "
                          f"{STATS_INTERVAL:g} s while they change, at SIGUSR1 and at exit")
    return parser


def softwire_for(args: argparse.Namespace) -> BorderRelay | Aftr:
    if args.mode == BR:
        return BorderRelay(MapRule.from_strings(args.rule_ipv6_prefix, args.rule_ipv4_prefix, args.ea_bits,
                                                args.psid_offset))
    return Aftr(args.bindings)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        softwire = softwire_for(args)
        tun = open_tun(args.tun, encapsulated_mtu(args.link_mtu))
        sock = open_raw_socket(args.address)
    except (OSError, ValueError) as error:
        print(f"softwire {args.mode}: {error}", file=sys.stderr)
        return 1
    endpoint = Endpoint(softwire, tun.fileno(), sock, args.stats)
    wakeup_fd = signal_wakeup()
    print("ready", flush=True)
    endpoint.run(wakeup_fd)
    tun.close()
    return 0


# -- the namespaces around it --------------------------------------------------------------------------------------

def namespace(lab: Lab, mode: str) -> str:
    return f"{lab.prefix}-{mode}"


def stats_path(lab: Lab, mode: str) -> Path:
    return lab.state_dir / f"softwire-{mode}.json"


def log_path(lab: Lab, mode: str) -> Path:
    return lab.state_dir / f"softwire-{mode}.log"


def read_stats(lab: Lab, mode: str) -> dict:
    """What the endpoint last wrote to its ``--stats`` file ({} before it has)."""
    try:
        return json.loads(stats_path(lab, mode).read_text())
    except (OSError, ValueError):
        return {}


def server_ipv6(j: int) -> str:
    return f"2001:db8:5::{10 * j}"


def lan_prefix6(wan: str) -> str | None:
    """The LAN's /64, on which the router advertises itself (RFC 4861 §6.2, SLAAC: RFC 4862): subnet LAN_SUBNET
    of its delegated prefix; None on an IPv4 WAN."""
    delegated = DELEGATED_PREFIXES.get(wan)
    if delegated is None:
        return None
    base = int(IPv6Network(delegated).network_address)
    return str(IPv6Network((base + (LAN_SUBNET << 64), 64)))


def router_lan6(wan: str) -> str | None:
    """The router's global address on the LAN: ``<LAN /64>::1``; None on an IPv4 WAN."""
    prefix = lan_prefix6(wan)
    return None if prefix is None else str(IPv6Network(prefix).network_address + 1)


def build_br(lab: Lab, progress=lambda msg: None) -> subprocess.Popen | None:
    """``<prefix>-br``: the MAP-E BR for the router's End-user prefix under the lab's BMR, its softwire end up.
    It routes the Rule IPv6 prefix to the router (ROUTER_LINK6: the softwires and the LAN's native IPv6, both
    from the End-user prefix) and the Rule IPv4 prefix into its softwire device: the userspace endpoint (its
    Popen is returned), or where the kernel has ``ip6_tunnel`` its ``ip6tnl`` to the lab's one CE (None)."""
    ns = _build_namespace(lab, BR, progress)
    lab.run_in(ns, "ip", "-6", "route", "add", RULE_IPV6_PREFIX, "via", ROUTER_LINK6)
    if kernel_has_ip6_tunnel():
        rule = MapRule.from_strings(RULE_IPV6_PREFIX, RULE_IPV4_PREFIX, EA_BITS, PSID_OFFSET)
        _kernel_softwire(lab, ns, str(derive_ce(rule, ip_network(END_USER_PREFIX)).map_ipv6_address))
        lab.run_in(ns, "ip", "route", "add", RULE_IPV4_PREFIX, "dev", TUN_NAME)
        return None
    proc = start_endpoint(lab, BR, "--rule-ipv6-prefix", RULE_IPV6_PREFIX, "--rule-ipv4-prefix", RULE_IPV4_PREFIX,
                          "--ea-bits", str(EA_BITS), "--psid-offset", str(PSID_OFFSET))
    _configure(lab, proc, ns, ("ip", "route", "add", RULE_IPV4_PREFIX, "dev", TUN_NAME))
    return proc


def build_aftr(lab: Lab, progress=lambda msg: None) -> subprocess.Popen | None:
    """``<prefix>-aftr``: the DS-Lite AFTR, its softwire end up (the userspace endpoint, or the kernel's
    ``ip6tnl`` to the B4 where it has ``ip6_tunnel``).  The softwire holds 192.0.0.1/29 (RFC 6333 §5.7) and the
    route to the LAN; the kernel's NAT44 masquerades out of br-wan, as a provider's CGN does.  The router's
    delegated prefix is routed to it, for the LAN's native IPv6."""
    ns = _build_namespace(lab, AFTR, progress)
    lab.run_in(ns, "ip", "-6", "route", "add", DELEGATED_PREFIX_DS_LITE, "via", ROUTER_LINK6)
    lab.run_in(ns, "nft", "-f", "-", input=aftr_nat_rules(pptp_helper_missing(ns) is None))
    commands = (("ip", "addr", "add", f"{AFTR_IPV4}/29", "dev", TUN_NAME),
                ("ip", "route", "add", B4_LAN_PREFIX, "dev", TUN_NAME))
    if kernel_has_ip6_tunnel():
        _kernel_softwire(lab, ns, ROUTER_LINK6)
        for command in commands:
            lab.run_in(ns, *command)
        return None
    proc = start_endpoint(lab, AFTR)
    _configure(lab, proc, ns, *commands)
    return proc


def _kernel_softwire(lab: Lab, ns: str, remote: str) -> None:
    """The kernel's IPv4-in-IPv6 tunnel (``ip6tnl``, mode ipip6: RFC 2473) from the tunnel address to
    ``remote``, named as the userspace endpoint's TUN is, with its MTU; no Tunnel Encapsulation Limit option
    (RFC 2473 §5.1), as MAP-E and DS-Lite send none."""
    lab.run_in(ns, "modprobe", "-q", "ip6_tunnel", check=False)
    lab.run_in(ns, "ip", "-6", "tunnel", "add", TUN_NAME, "mode", "ipip6", "local", TUNNEL_ADDRESS, "remote",
               remote, "encaplimit", "none")
    lab.run_in(ns, "ip", "link", "set", TUN_NAME, "mtu", str(TUN_MTU), "up")


def server_routes_map_e(lab: Lab) -> None:
    """Each server reaches the MAP domain's shared addresses through the BR."""
    for j in range(1, lab.servers + 1):
        lab.run_in(lab.server(j), "ip", "route", "replace", RULE_IPV4_PREFIX, "via", GATEWAY4)


def ensure_access_bridge(lab: Lab) -> None:
    """br-v6 in the switch namespace, made if missing (no multicast snooping: ND must never wait for MLD)."""
    if lab.run_in(lab.switch, "ip", "link", "show", ACCESS_BRIDGE, check=False).returncode != 0:
        lab.run_in(lab.switch, "ip", "link", "add", ACCESS_BRIDGE, "type", "bridge", "forward_delay", "0",
                   "mcast_snooping", "0")
        lab.run_in(lab.switch, "ip", "link", "set", ACCESS_BRIDGE, "up")


def _build_namespace(lab: Lab, mode: str, progress) -> str:
    ns = namespace(lab, mode)
    progress(f"softwire end {ns}")
    _remove(lab, ns)
    lab._namespace(ns)
    for setting in NAMESPACE_SYSCTLS:             # IPv6 back on (Lab._namespace turns it off) before the veths
        lab.run_in(ns, "sysctl", "-qw", setting)
    ensure_access_bridge(lab)
    _veth(lab, ns, f"v-{mode}6", ACCESS_BRIDGE, (ACCESS_DEV, ACCESS_MAC), f"{TUNNEL_ADDRESS}/64")
    _veth(lab, ns, f"v-{mode}4", "br-wan", (WAN_DEV, WAN_MAC), f"{GATEWAY4}/24", f"{GATEWAY6}/64")
    return ns


def _veth(lab: Lab, ns: str, outside: str, bridge: str, inside: tuple[str, str], *addresses: str) -> None:
    """A veth from ``bridge`` into ``ns``, its inside end (name, MAC) holding ``addresses``."""
    (name, mac), sw = inside, lab.switch
    lab.run_in(sw, "ip", "link", "del", outside, check=False)
    lab.run_in(sw, "ip", "link", "add", outside, "type", "veth", "peer", "name", name, "address", mac, "netns", ns)
    lab.run_in(sw, "ip", "link", "set", outside, "master", bridge, "up")
    for address in addresses:
        lab.run_in(ns, "ip", "addr", "add", address, "dev", name, *(["nodad"] if ":" in address else []))
    lab.run_in(ns, "ip", "link", "set", name, "up")


def start_endpoint(lab: Lab, mode: str, *options: str, wait: float = 10.0) -> subprocess.Popen:
    """The endpoint in its namespace, once it has said "ready"; its stderr goes to ``log_path``."""
    lab.state_dir.mkdir(parents=True, exist_ok=True)
    with open(log_path(lab, mode), "w") as log:
        proc = lab.popen_in(namespace(lab, mode), sys.executable, "-m", "router.lab.softwire", mode,
                            "--stats", str(stats_path(lab, mode)), *options, stdout=subprocess.PIPE, stderr=log,
                            text=True, start_new_session=True)
    ready, _, _ = select.select([proc.stdout], [], [], wait)
    if ready and proc.stdout.readline().strip() == "ready":
        return proc
    returncode = stop_endpoint(proc)
    why = f"was not ready within {wait:g} s" if not ready else f"exited with {returncode}"
    raise LabError(f"the softwire endpoint ({mode}) {why}: {log_path(lab, mode).read_text()[-2000:].strip()}")


def stop_endpoint(proc: subprocess.Popen, timeout: float = 5.0) -> int | None:
    """SIGTERM, then SIGKILL after ``timeout``; the exit status (None if it had to be killed)."""
    return stop_process(proc, timeout)


def _configure(lab: Lab, proc: subprocess.Popen, ns: str, *commands: tuple[str, ...]) -> None:
    """Commands on the endpoint's TUN, which exists only once it runs; the endpoint stopped if one fails."""
    try:
        for command in commands:
            lab.run_in(ns, *command)
    except LabError:
        stop_endpoint(proc)
        raise


def remove_softwires(lab: Lab) -> None:
    """The BR's and the AFTR's namespaces gone, their endpoints killed; idempotent."""
    for mode in (BR, AFTR):
        _remove(lab, namespace(lab, mode))


def _remove(lab: Lab, ns: str) -> None:
    if Path("/run/netns", ns).exists():
        lab._remove_namespace(ns)


# -- what the kernel offers ------------------------------------------------------------------------------------------

PPTP_HELPER_PROBE = 'table ip probe {\n ct helper pptp { type "pptp" protocol tcp; l3proto ip; }\n}\n'


def aftr_nat_rules(pptp_helper: bool) -> str:
    """NAT44 out of br-wan; with ``pptp_helper``, Linux's PPTP helper on TCP 1723, which expects each call's GRE
    (by call ID) and has the NAT rewrite it."""
    helper = ('  ct helper pptp { type "pptp" protocol tcp; l3proto ip; }\n'
              '  chain helpers {\n   type filter hook prerouting priority filter;\n'
              '   tcp dport 1723 ct helper set "pptp"\n  }\n') if pptp_helper else ""
    return (f'table ip aftr {{\n{helper}  chain postrouting {{\n   type nat hook postrouting priority srcnat;\n'
            f'   oifname "{WAN_DEV}" masquerade\n  }}\n}}\n')


def _run(ns: str | None, *cmd: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """``cmd`` in namespace ``ns`` (None: here), its failure returned, not raised."""
    try:
        return subprocess.run((["ip", "netns", "exec", ns] if ns else []) + list(cmd), input=stdin,
                              capture_output=True, text=True, timeout=30)
    except FileNotFoundError as error:
        return subprocess.CompletedProcess(cmd, 127, "", str(error))


def pptp_helper_missing(ns: str | None = None) -> str | None:
    """Why the kernel cannot track PPTP (None if it can): ``nft --check`` asks it for a "pptp" ct helper
    without adding one, after ``modprobe nf_conntrack_pptp`` where it is a module."""
    _run(ns, "modprobe", "-q", "nf_conntrack_pptp")
    probe = _run(ns, "nft", "-c", "-f", "-", stdin=PPTP_HELPER_PROBE)
    if probe.returncode == 0:
        return None
    error = next((line for line in probe.stderr.splitlines() if "Error" in line), probe.stderr.strip())
    return f"the kernel has no nf_conntrack_pptp (nft: {error.split('Error:')[-1].strip()})"


def aftr_pptp_helper_status(lab: Lab | None = None) -> str:
    """For `lab status`: whether the lab's AFTR tracks PPTP in its NAT44, or (no lab, or no AFTR in it) whether
    this kernel would; if not, why."""
    ns = namespace(lab, AFTR) if lab else None
    if ns is None or not Path("/run/netns", ns).exists():
        missing = pptp_helper_missing()
        return f"no PPTP helper: {missing}" if missing else "nf_conntrack_pptp: the kernel has it for an AFTR's NAT44"
    if 'type "pptp"' in _run(ns, "nft", "list", "table", "ip", "aftr").stdout:
        return "nf_conntrack_pptp: the AFTR's NAT44 tracks PPTP (TCP 1723) and its GRE by call ID"
    return f"no PPTP helper: {pptp_helper_missing(ns) or 'the AFTR was built without it'}"


def kernel_has_ip6_tunnel() -> bool:
    """Loaded or built in (``/sys/module``), or loadable (``modprobe -n``, which loads nothing)."""
    if Path("/sys/module/ip6_tunnel").exists():
        return True
    try:
        return subprocess.run(["modprobe", "-n", "-q", "ip6_tunnel"], capture_output=True, check=False).returncode == 0
    except FileNotFoundError:
        return False


def endpoint_kind() -> str:
    """For `lab status`: what carries the softwires: the kernel's ``ip6tnl`` where it has ``ip6_tunnel`` (the
    VM), else this module's userspace endpoint (the build machines)."""
    if kernel_has_ip6_tunnel():
        return "the kernel's ip6tnl (ipip6); the BR's to the lab's one CE"
    return "userspace (raw IPv6 socket + TUN); the kernel has no ip6_tunnel"


if __name__ == "__main__":
    sys.exit(main())
