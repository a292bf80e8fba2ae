"""A lab of network namespaces around the router.

    client namespaces ──veth── br-lan ── TAP lan0 ┐
                                                  ├─ vpnrouter (in the switch namespace)
    server namespaces ──veth── br-wan ── TAP wan0 ┘

The switch namespace ``<prefix>-sw`` holds both bridges and the TAPs, and
the router process runs there.  With ``kernel=True`` the same topology gets
Linux's own NAT instead (a namespace ``<prefix>-kr`` with IP forwarding and
nftables masquerade, joined to the bridges by veth), for side-by-side
measurements.  LAN 192.168.77.0/24, WAN 198.51.100.0/24.

On an IPv6 WAN (``wan="map-e"`` or ``"ds-lite"``) the clients and servers have IPv6 too: each client takes its
address on the LAN /64 from the router's Router Advertisements (SLAAC, RFC 4862; ``client_ipv6``), each server
has 2001:db8:5::10*j/64 and its default route through the BR or the AFTR.  On an IPv4 WAN they have none.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .tools import LabError, require, stop_process

LAN_PREFIX = "192.168.77"
WAN_PREFIX = "198.51.100"
ROUTER_LAN = f"{LAN_PREFIX}.1"
ROUTER_WAN = f"{WAN_PREFIX}.1"
STATE_DIR = Path("/run/vpnrouter-lab")
PEERS_DIR = Path("/var/lib/vpnrouter-lab")
"""Where the VPN daemons' files go: not under /run, which each daemon's private mount namespace replaces."""
CLIENT_IPV6_SYSCTLS = ("accept_ra=1", "autoconf=1", "router_solicitations=-1", "router_solicitation_interval=1",
                      "router_solicitation_max_interval=4")
"""A client's eth0, as a host: it takes the router's RAs and makes its address from them (RFC 4862 §5.5), and
keeps soliciting, every 4 s at most, until an RA comes (RFC 7559), so a router started after it is found."""


def sh(*args: str, check: bool = True, ns: str | None = None, **kw) -> subprocess.CompletedProcess:
    require("ip", args[0])
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    result = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and result.returncode != 0:
        raise LabError(f"{' '.join(cmd)}: {result.stderr.strip() or result.stdout.strip()}")
    return result


@dataclass
class Lab:
    prefix: str = "vr"
    clients: int = 2
    servers: int = 2
    kernel: bool = False
    forwards: list[dict] = field(default_factory=list)
    wan: str = "ipv4"
    """The router's WAN: "ipv4" (on br-wan, as 198.51.100.1), or an IPv6 access link (br-v6) to a MAP-E BR
    ("map-e") or a DS-Lite AFTR ("ds-lite") namespace between it and the servers (``router.lab.softwire``)."""
    keep_state: bool = True
    """The router keeps its tables across a restart in the lab's directory (``[state]``); False: every start is
    fresh (make bench, whose restarts must each measure a new router)."""
    router_proc: subprocess.Popen | None = None

    @property
    def switch(self) -> str:
        return f"{self.prefix}-sw"

    @property
    def kernel_router(self) -> str:
        return f"{self.prefix}-kr"

    def client(self, i: int) -> str:
        return f"{self.prefix}-c{i}"

    def server(self, j: int) -> str:
        return f"{self.prefix}-s{j}"

    @staticmethod
    def client_ip(i: int) -> str:
        return f"{LAN_PREFIX}.{10 + i}"

    @staticmethod
    def server_ip(j: int) -> str:
        return f"{WAN_PREFIX}.{10 * j}"

    @staticmethod
    def server_ip6(j: int) -> str:
        from . import softwire
        return softwire.server_ipv6(j)

    @property
    def ipv6(self) -> bool:
        """Whether the clients and servers have IPv6: an IPv6 WAN, with vpnrouter (not Linux's NAT) between."""
        return self.wan != "ipv4" and not self.kernel

    @property
    def state_dir(self) -> Path:
        return STATE_DIR / self.prefix

    @property
    def peers_dir(self) -> Path:
        return PEERS_DIR / self.prefix

    @property
    def config_path(self) -> Path:
        return self.state_dir / "router.toml"

    @property
    def socket_path(self) -> Path:
        return self.state_dir / "control.sock"

    @property
    def provider(self) -> str | None:
        """The namespace of the provider's end of an IPv6 WAN: the BR (MAP-E) or the AFTR (DS-Lite)."""
        return {"map-e": f"{self.prefix}-br", "ds-lite": f"{self.prefix}-aftr"}.get(self.wan)

    def namespaces(self) -> list[str]:
        names = [self.switch] + [self.client(i) for i in range(1, self.clients + 1)]
        names += [self.server(j) for j in range(1, self.servers + 1)]
        return names + ([self.kernel_router] if self.kernel else [])   # the provider's: built by up()

    # -- building ---------------------------------------------------------------------------

    def up(self, progress=lambda msg: None) -> None:
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces)")
        self.down()
        progress("namespaces")
        for ns in self.namespaces():
            self._namespace(ns)
        sw = self.switch
        # A switch, not a firewall: where br_netfilter is loaded it would check and drop bridged IPv4.
        for table in ("iptables", "ip6tables", "arptables"):
            sh("sysctl", "-qw", f"net.bridge.bridge-nf-call-{table}=0", ns=sw, check=False)
        for br in ("br-lan", "br-wan"):
            sh("ip", "link", "add", br, "type", "bridge", "forward_delay", "0", ns=sw)
            sh("ip", "link", "set", br, "up", ns=sw)
        if self.kernel:
            progress("kernel NAT")
            self.kernel_nat()
        else:
            wan_bridge = "br-wan" if self.wan == "ipv4" else "br-v6"
            if self.wan != "ipv4":
                sh("ip", "link", "add", wan_bridge, "type", "bridge", "forward_delay", "0", "mcast_snooping", "0",
                   ns=sw)
                sh("ip", "link", "set", wan_bridge, "up", ns=sw)
            for tap, br in (("lan0", "br-lan"), ("wan0", wan_bridge)):
                sh("ip", "tuntap", "add", "dev", tap, "mode", "tap", ns=sw)
                sh("ip", "link", "set", tap, "master", br, "up", ns=sw)
        progress("clients and servers")
        for host in self._hosts():
            self._host(*host)
        if self.wan != "ipv4" and not self.kernel:
            self._provider(progress)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.router_config())

    def _hosts(self) -> list[tuple]:
        """(namespace, tag, bridge, address, gateway) of every client and server."""
        return [(self.client(i), f"c{i}", "br-lan", f"{self.client_ip(i)}/24", ROUTER_LAN)
                for i in range(1, self.clients + 1)] + \
            [(self.server(j), f"s{j}", "br-wan", f"{self.server_ip(j)}/24", None) for j in range(1, self.servers + 1)]

    def _provider(self, progress) -> None:
        """The BR or the AFTR, with its softwire endpoint running (``router.lab.softwire``)."""
        from . import softwire
        if self.wan == "map-e":
            progress("the MAP-E border relay")
            softwire.build_br(self, progress)
            softwire.server_routes_map_e(self)
        else:
            progress("the DS-Lite AFTR")
            softwire.build_aftr(self, progress)

    def rebuild_hosts(self) -> None:
        """The clients and servers made again from nothing (new namespaces, so new MACs; the same addresses),
        the switch with its bridges and TAPs kept: what a router restarted for a freshly built lab meets. The
        router's state file stays; what the VPN daemons left goes."""
        hosts = self._hosts()
        for ns, tag, *_ in hosts:
            sh("ip", "link", "del", f"v-{tag}", ns=self.switch, check=False)    # the pair goes at once
            self._remove_namespace(ns)
        shutil.rmtree(self.peers_dir, ignore_errors=True)
        (self.state_dir / "vpn.json").unlink(missing_ok=True)
        for ns, tag, bridge, address, gateway in hosts:
            self._namespace(ns)
            self._host(ns, tag, bridge, address, gateway)

    @staticmethod
    def _namespace(ns: str) -> None:
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "set", "lo", "up", ns=ns)
        sh("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", ns=ns)
        sh("sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1", ns=ns)

    def _remove_namespace(self, ns: str) -> None:
        """End whatever still runs in the namespace, then remove it (its veths go with it)."""
        for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        sh("ip", "netns", "del", ns, check=False)

    def _host(self, ns: str, tag: str, bridge: str, address: str, gateway: str | None) -> None:
        sw = self.switch
        sh("ip", "link", "add", f"v-{tag}", "type", "veth", "peer", "name", "eth0", "netns", ns, ns=sw)
        sh("ip", "link", "set", f"v-{tag}", "master", bridge, "up", ns=sw)
        sh("ip", "addr", "add", address, "dev", "eth0", ns=ns)
        sh("ip", "link", "set", "eth0", "up", ns=ns)
        if gateway:
            sh("ip", "route", "add", "default", "via", gateway, ns=ns)
        if self.ipv6:
            self._host_ipv6(ns, tag)

    def _host_ipv6(self, ns: str, tag: str) -> None:
        """IPv6 on (``_namespace`` turns it off) for the interfaces there are, lo and eth0: a client as a SLAAC
        host; a server on 2001:db8:5::/64, its default route through the BR or the AFTR.  ``default`` goes back
        off: the interfaces made later (tunnels, PPP) carry IPv4 only, as in every lab."""
        from . import softwire
        if tag.startswith("c"):
            for setting in CLIENT_IPV6_SYSCTLS:       # set while IPv6 is still off: its first RS follows them
                sh("sysctl", "-qw", f"net.ipv6.conf.eth0.{setting}", ns=ns)
        else:
            sh("sysctl", "-qw", "net.ipv6.conf.eth0.accept_ra=0", ns=ns)
        sh("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0", ns=ns)      # every interface there is, and default
        sh("sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1", ns=ns)
        if tag.startswith("s"):
            sh("ip", "addr", "add", f"{self.server_ip6(int(tag[1:]))}/64", "dev", "eth0", "nodad", ns=ns)
            sh("ip", "-6", "route", "add", "default", "via", softwire.GATEWAY6, ns=ns)

    def kernel_nat(self, lan_ip: str = ROUTER_LAN, wan_ip: str = ROUTER_WAN) -> None:
        """Linux's NAT (nftables masquerade, conntrack) in ``<prefix>-kr`` on both bridges: in place of vpnrouter
        (``kernel=True``), or beside it on addresses of its own."""
        kr, sw = self.kernel_router, self.switch
        if kr not in self.existing_namespaces():
            sh("ip", "netns", "add", kr)
            sh("ip", "link", "set", "lo", "up", ns=kr)
        for side, br, addr in (("lan", "br-lan", f"{lan_ip}/24"), ("wan", "br-wan", f"{wan_ip}/24")):
            sh("ip", "link", "add", f"k-{side}", "type", "veth", "peer", "name", side, "netns", kr, ns=sw)
            sh("ip", "link", "set", f"k-{side}", "master", br, "up", ns=sw)
            sh("ip", "addr", "add", addr, "dev", side, ns=kr)
            sh("ip", "link", "set", side, "up", ns=kr)
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=kr)
        rules = ("table ip nat {\n chain postrouting {\n  type nat hook postrouting priority srcnat;\n"
                 "  oifname \"wan\" masquerade\n }\n}\n")
        sh("nft", "-f", "-", ns=kr, input=rules)

    def router_config(self) -> str:
        """The lab router's configuration: passthrough and NAT behaviour as the defaults (or a profile in
        ``extra_config``) make them."""
        forwards = "".join(f'\n[[forward]]\nproto = "{f["proto"]}"\nport = {f["port"]}\nto = "{f["to"]}"\n'
                           for f in self.forwards)
        return (f'[lan]\ntap = "lan0"\naddress = "{ROUTER_LAN}/24"\n\n'
                f'{self.wan_config()}\n'
                f'[control]\nsocket = "{self.socket_path}"\n\n'
                f'[state]\nfile = "{self.state_dir / "router.state" if self.keep_state else ""}"\n{forwards}')

    def wan_config(self) -> str:
        """``[wan]`` for the lab's WAN mode.  Under DS-Lite it names the delegated prefix the router numbers its
        LAN from; under MAP-E the End-user prefix is that."""
        if self.wan == "ipv4":
            return f'[wan]\ntap = "wan0"\naddress = "{ROUTER_WAN}/24"\n'
        from . import softwire
        link = (f'[wan]\nmode = "{self.wan}"\ntap = "wan0"\naddress6 = "{softwire.ROUTER_LINK6}/64"\n'
                f'gateway6 = "{softwire.PROVIDER6}"\n')
        if self.wan == "ds-lite":
            return (f'{link}delegated_prefix = "{softwire.DELEGATED_PREFIX_DS_LITE}"\n\n'
                    f'[wan.ds_lite]\naftr = "{softwire.PROVIDER6}"\n')
        return link + (f'\n[wan.map_e]\nend_user_prefix = "{softwire.END_USER_PREFIX}"\n'
                       f'rule_ipv6_prefix = "{softwire.RULE_IPV6_PREFIX}"\n'
                       f'rule_ipv4_prefix = "{softwire.RULE_IPV4_PREFIX}"\nea_bits = {softwire.EA_BITS}\n'
                       f'psid_offset = {softwire.PSID_OFFSET}\nbr = "{softwire.PROVIDER6}"\n')

    # -- the router ------------------------------------------------------------------------------

    def start_router(self, extra_config: str = "", log_path: Path | None = None, wait: float = 60.0) -> subprocess.Popen:
        if extra_config:
            self.config_path.write_text(self.router_config() + "\n" + extra_config)
        log = open(log_path or self.state_dir / "router.log", "w")
        self.router_proc = subprocess.Popen(
            ["ip", "netns", "exec", self.switch, sys.executable, "-m", "router", "run", "--config",
             str(self.config_path)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        (self.state_dir / "router.pid").write_text(str(self.router_proc.pid))
        deadline = time.monotonic() + wait
        while not self.socket_path.exists():
            if self.router_proc.poll() is not None:
                raise LabError(f"the router exited with {self.router_proc.returncode}: "
                               f"{(self.state_dir / 'router.log').read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise LabError("the router did not open its control socket in time")
            time.sleep(0.05)
        return self.router_proc

    def stop_router(self, timeout: float = 5.0) -> int | None:
        proc, self.router_proc = self.router_proc, None
        return None if proc is None else stop_process(proc, timeout)

    def router_pid(self) -> int | None:
        """The router process a `lab up` started, from its pid file."""
        try:
            return int((self.state_dir / "router.pid").read_text())
        except (OSError, ValueError):
            return None

    def existing_namespaces(self) -> list[str]:
        """This lab's namespaces that exist now, however many clients and servers it was made with."""
        names = [line.split()[0] for line in sh("ip", "netns", "list", check=False).stdout.splitlines() if line]
        pattern = re.compile(rf"^{re.escape(self.prefix)}-(sw|kr|br|aftr|c\d+|s\d+)$")
        return [name for name in names if pattern.match(name)]

    def down(self) -> None:
        """Remove everything the lab made: idempotent, and thorough after a crash (SIGKILLed router, daemons)."""
        self.stop_router()
        pid = self.router_pid()
        if pid is not None and self.router_proc is None and is_router_process(pid):
            os.kill(pid, signal.SIGTERM)      # a router a previous `lab up` left running: let it exit cleanly
            deadline = time.monotonic() + 5
            while is_router_process(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
        for ns in self.existing_namespaces():
            self._remove_namespace(ns)
        shutil.rmtree(self.state_dir, ignore_errors=True)
        shutil.rmtree(self.peers_dir, ignore_errors=True)

    def run_in(self, ns: str, *cmd: str, check: bool = True, timeout: float | None = 60, **kw):
        return sh(*cmd, ns=ns, check=check, timeout=timeout, **kw)

    def popen_in(self, ns: str, *cmd: str, **kw) -> subprocess.Popen:
        require("ip", cmd[0])
        return subprocess.Popen(["ip", "netns", "exec", ns, *cmd], **kw)


def client_ipv6(lab: Lab, i: int, wait: float = 10.0) -> str:
    """Client i's global IPv6 address, made by SLAAC from the router's Router Advertisements (RFC 4862 §5.5.3),
    once Duplicate Address Detection has passed (not tentative); waits up to ``wait`` seconds for one."""
    deadline = time.monotonic() + wait
    while True:
        shown = sh("ip", "-6", "-j", "addr", "show", "dev", "eth0", "scope", "global", "-tentative",
                   ns=lab.client(i), check=False).stdout
        addresses = [a["local"] for link in json.loads(shown or "[]") for a in link.get("addr_info", [])
                     if "local" in a]                   # iproute2 adds an empty {} after the addresses
        if addresses:
            return addresses[0]
        if time.monotonic() > deadline:
            from . import softwire
            raise LabError(f"{lab.client(i)}: no IPv6 address from the router's Router Advertisements in "
                           f"{wait:g} s (the LAN prefix would be {softwire.lan_prefix6(lab.wan)})")
        time.sleep(0.2)


def is_router_process(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) `vpnrouter run` process: a stale pid file names none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return stat.split(") ", 1)[1][:1] != "Z" and b"router" in b" ".join(cmdline) and b"run" in cmdline
