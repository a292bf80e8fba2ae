"""VPN peers in the lab, kept across commands: servers on ``lab up``, clients on ``lab connect``.

Every server namespace runs pptpd, an xl2tpd LNS and a strongSwan gateway,
and the VPNs that need no passthrough: OpenVPN over UDP and over TCP, and
WireGuard (``openvpn.py``, ``wireguard.py``).  ``connect CLIENT PROTO [SERVER]``
starts pptp-linux, an xl2tpd LAC, a strongSwan client, an OpenVPN client or a
WireGuard peer in that client's namespace and waits until the router shows
the session up, and, where the peers carry IP (the real pppd, IPsec, OpenVPN,
WireGuard), until a ping crosses the tunnel.  Which peers run (the real pppd and
kernel ESP, or the stand-in and kernel-libipsec) is chosen once, when the
servers start (``kernel.py``).  Each daemon runs in its own mount namespace (see
``pptp.py``, ``l2tp.py``, ``ipsec.py``) and in a session of its own, so it
outlives the command that started it.  What runs where is written to
``vpn.json`` in the lab's state directory; ``lab down`` needs none of it: it
ends every process in the lab's namespaces.

In a lab with an IPv6 WAN, ``connect ... ipv6=True`` (``lab connect --ipv6``)
carries an OpenVPN or WireGuard tunnel over IPv6, from the client's SLAAC
address to the server's 2001:db8:5::10*j.  The router forwards it untranslated
through its firewall (RFC 6092), so there is no NAT session to wait for: the
tunnel is up when a ping crosses it, and the router's IPv6 session of it, if
it lists one, is what ``connect`` returns.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from ipaddress import ip_address
from pathlib import Path

from ..control.client import Client, ControlError
from ..control.schema import flow_protos, is_vpn_flow
from ..helpers import registry
from . import ipsec, l2tp, openvpn, pptp, tools, wireguard
from .kernel import Peers, detect
from .tools import require
from .topology import Lab, LabError, client_ipv6, is_router_process

PROTOCOLS = ("pptp", "l2tp", "ipsec")
"""The VPNs a passthrough helper of the router's carries."""
TUNNELS = ("openvpn", "openvpn-tcp", "wireguard")
"""The VPNs that need no passthrough: one UDP or TCP flow each, which the NAT translates as any other."""
CONNECTABLE = PROTOCOLS + TUNNELS
TUNNEL_PORTS = {"openvpn": ("udp", openvpn.PORT), "openvpn-tcp": ("tcp", openvpn.PORT),
                "wireguard": ("udp", wireguard.PORT)}
IPV6_ONLY_FOR = "--ipv6: only for openvpn, openvpn-tcp and wireguard"
IPV6_NEEDS_WAN = "--ipv6 needs a lab with an IPv6 WAN: lab up --wan map-e|ds-lite"
CONNECT_WAIT = 45.0
"""Seconds a connect may take before it is reported as failed (IKE and PPP under load take a few)."""


class VpnLab:
    def __init__(self, lab: Lab):
        self.lab = lab
        self.path = lab.state_dir / "vpn.json"

    # -- state ---------------------------------------------------------------------------------

    def load(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return {"servers": {}, "clients": {}}

    def save(self, state: dict) -> None:
        self.path.write_text(json.dumps(state, indent=2))

    def directory(self, *parts: str) -> Path:
        path = self.lab.peers_dir.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    # -- servers ---------------------------------------------------------------------------------

    def peers(self, state: dict | None = None) -> Peers:
        return Peers.from_dict((state or self.load()).get("peers"))

    def start_servers(self, progress=lambda msg: None, peers: str | None = None) -> None:
        """pptpd, an xl2tpd LNS and a strongSwan gateway in every server namespace; ``peers`` is "auto"
        (default), "kernel" or "userspace" (``kernel.detect``)."""
        require(*tools.SERVERS)
        state = self.load()
        chosen = detect(peers)
        if not chosen.kernel_wireguard:
            require(tools.USERSPACE_WIREGUARD)
        state["peers"] = chosen.to_dict()
        progress(f"VPN peers: {chosen.describe()}")
        real, esp = chosen.real_ppp, chosen.kernel_esp
        for j in range(1, self.lab.servers + 1):
            name, ns, address = f"s{j}", self.lab.server(j), self.lab.server_ip(j)
            progress(f"{name}: pptpd, xl2tpd LNS, strongSwan gateway, OpenVPN (UDP, TCP), WireGuard")
            procs = {"pptp": pptp.start_pptpd(self.lab, ns, self.directory(name, "pptp"), real).pid,
                     "l2tp": l2tp.start_lns(self.lab, ns, self.directory(name, "l2tp"), real).proc.pid,
                     "ipsec": ipsec.start_gateway(self.lab, ns, self.directory(name, "ipsec"),
                                                  address=address, kernel_esp=esp).proc.pid}
            for flavour in openvpn.FLAVOURS.values():
                procs[flavour.name] = openvpn.start_server(self.lab, ns, self.directory(name, flavour.name),
                                                           flavour, address).pid
            procs["wireguard"] = wireguard.start_server(self.lab, ns, self.directory(name, "wireguard"), name,
                                                        chosen.kernel_wireguard).pid
            state["servers"][name] = {"address": address, "pids": procs,
                                      **({"address6": self.lab.server_ip6(j)} if self.lab.ipv6 else {})}
            self.save(state)

    # -- clients -----------------------------------------------------------------------------------

    def client(self, text: str) -> tuple[str, str, str]:
        """(name, namespace, address) of a client named "c2", "2" or by its namespace."""
        return self._host(text, "c", self.lab.clients, self.lab.client, self.lab.client_ip)

    def server(self, text: str) -> tuple[str, str, str]:
        if text.count(".") == 3:
            for j in range(1, self.lab.servers + 1):
                if self.lab.server_ip(j) == text:
                    return f"s{j}", self.lab.server(j), text
        return self._host(text, "s", self.lab.servers, self.lab.server, self.lab.server_ip)

    def _host(self, text, letter, count, ns_of, ip_of):
        index = text.removeprefix(f"{self.lab.prefix}-").removeprefix(letter)
        if not index.isdigit() or not 1 <= int(index) <= count:
            names = ", ".join(f"{letter}{i}" for i in range(1, count + 1))
            raise LabError(f"no {'client' if letter == 'c' else 'server'} {text!r} in this lab (it has {names})")
        i = int(index)
        return f"{letter}{i}", ns_of(i), ip_of(i)

    def connect(self, client: str, proto: str, server: str = "s1", progress=lambda msg: None,
                wait: float = CONNECT_WAIT, ipv6: bool = False) -> dict:
        """Bring a VPN session up from a client to a server; the router's view of it once it is up.  With
        ``ipv6``, an OpenVPN or WireGuard tunnel over IPv6 (a lab with an IPv6 WAN only).

        If it is not up within ``wait`` seconds, the client is stopped again (its logs stay) and LabError says
        so: the router may have refused it (single passthrough, a rule, a port set: see its events)."""
        if proto not in CONNECTABLE:
            raise LabError(f"unknown VPN {proto!r}: {', '.join(CONNECTABLE)}")
        if ipv6:
            self._check_ipv6(proto)
        require(*tools.CLIENTS[proto])
        name, ns, address = self.client(client)
        sname, _, server_ip = self.server(server)
        state = self.load()
        if sname not in state["servers"]:
            raise LabError(f"{sname} runs no VPN servers: bring the lab up with `vpnrouter lab up`")
        if ipv6:            # the client's address first: without one, say so rather than time out
            address, server_ip = client_ipv6(self.lab, _index(name)), self.lab.server_ip6(_index(sname))
        mine = state["clients"].setdefault(name, {})
        if proto in mine and _alive(mine[proto]["pid"]):
            raise LabError(f"{name} already holds a {proto} session (to {mine[proto]['server']}): "
                           f"disconnect it first")
        directory = self.directory(name, proto)
        peers = self.peers(state)
        if proto == "wireguard" and not peers.kernel_wireguard:
            require(tools.USERSPACE_WIREGUARD)
        progress(f"{name}: {proto} to {sname} ({server_ip}{', over IPv6' if ipv6 else ''})")
        if proto in TUNNELS:
            pid = self._start_tunnel(proto, name, ns, sname, server_ip, directory, peers).pid
        elif proto == "pptp":
            pid = pptp.start_pptp_client(self.lab, ns, server_ip, directory, peers.real_ppp, name=name).pid
        elif proto == "l2tp":
            lac = l2tp.start_lac(self.lab, ns, server_ip, directory, host=name, real_ppp=peers.real_ppp)
            lac.connect()
            pid = lac.proc.pid
        else:
            charon = ipsec.start_client(self.lab, ns, directory, gateway=server_ip, identity=name,
                                        kernel_esp=peers.kernel_esp)
            pid = charon.proc.pid
        mine[proto] = {"pid": pid, "server": sname, "server_ip": server_ip, "ipv6": ipv6}
        self.save(state)
        try:
            if proto == "ipsec":
                ipsec.connect(charon, timeout=max(1, int(wait)))
            if proto in ("ipsec", *TUNNELS) or peers.real_ppp:  # both ways (an IPsec association: both SPIs)
                self._wait_traffic(name, proto, progress, wait)
            if ipv6:
                return self._ipv6_session(proto, address, server_ip)
            if self.lab.wan == "ds-lite":       # the B4 keeps no sessions: the AFTR's NAT does
                return self._wait_through_aftr(name, proto, address, server_ip, directory, peers, progress, wait)
            return self._wait_up(proto, address, server_ip, progress, wait)
        except LabError:
            self.disconnect(name, proto)
            raise

    def _check_ipv6(self, proto: str) -> None:
        """``--ipv6`` only where it means something: a tunnel that is one UDP or TCP flow, on an IPv6 WAN."""
        if proto not in TUNNELS:
            raise LabError(IPV6_ONLY_FOR)
        if not self.lab.ipv6:
            raise LabError(IPV6_NEEDS_WAN)

    def _ipv6_session(self, proto: str, client6: str, server6: str) -> dict:
        """A tunnel over IPv6, up (a ping crossed it): the router's IPv6 session of it, or if it lists none,
        what was seen."""
        for session in self.sessions():
            if is_tunnel6_flow_of(session, proto, client6, server6):
                return session
        _, port = TUNNEL_PORTS[proto]
        return {"id": None, "vpn": proto, "family": "ipv6", "client": client6, "inside": client6,
                "remote": f"[{server6}]:{port}",
                "state": "up over IPv6 (a ping crossed the tunnel; the router lists no IPv6 session of it)"}

    def _start_tunnel(self, proto: str, name: str, ns: str, sname: str, server_ip: str, directory: Path,
                      peers: Peers) -> subprocess.Popen:
        if proto == "wireguard":
            return wireguard.start_client(self.lab, ns, directory, name, _index(name), server_ip, sname,
                                          peers.kernel_wireguard)
        return openvpn.start_client(self.lab, ns, directory, openvpn.FLAVOURS[proto], server_ip, name)

    def ping(self, client: str, proto: str, count: int = 3) -> subprocess.CompletedProcess:
        """Ping the server's end of a client's tunnel through it: the PPP peer (10.99.0.1 for PPTP, 10.98.0.1
        for L2TP) over the client's PPP interface, the IPsec gateway's inner address from the virtual IP, or the
        OpenVPN server's (10.97.0.1 over UDP, 10.96.0.1 over TCP) or WireGuard peer's (10.95.0.1) tunnel
        address over the client's tunnel interface."""
        name, ns, _ = self.client(client)
        state = self.load()
        if proto not in state["clients"].get(name, {}):
            raise LabError(f"{name} holds no {proto} session: `vpnrouter lab connect {name} {proto}` first")
        directory = self.directory(name, proto)
        if proto in TUNNELS:
            interface, peer = ((wireguard.INTERFACE, wireguard.SERVER_TUNNEL_IP) if proto == "wireguard" else
                               (openvpn.FLAVOURS[proto].interface, openvpn.FLAVOURS[proto].server_tunnel_ip))
            return self.lab.run_in(ns, "ping", "-n", "-c", str(count), "-i", "0.2", "-W", "2", "-I", interface,
                                   peer, check=False, timeout=30)
        if proto == "ipsec":
            charon = ipsec.Charon(self.lab, ns, directory, "client", "vpn", proc=None)
            return ipsec.ping(self.lab, charon, count=count)
        if not self.peers(state).real_ppp:
            frames = len(pptp.ppp_frames(directory))
            raise LabError(f"{name}'s {proto} call runs the pppd stand-in (this kernel has no /dev/ppp): it carries "
                           f"PPP frames, not IP ({frames} frames received so far, logged under {directory})")
        interface, peer = ((pptp.PPTP_INTERFACE, pptp.PPTPD_LOCAL_IP) if proto == "pptp"
                           else (l2tp.L2TP_INTERFACE, l2tp.LNS_LOCAL_IP))
        return self.lab.run_in(ns, "ping", "-n", "-c", str(count), "-i", "0.2", "-W", "2", "-I", interface, peer,
                               check=False, timeout=30)

    def _wait_traffic(self, client: str, proto: str, progress, wait: float) -> None:
        """Until a ping crosses the new tunnel (PPP's IPCP, or the child SA, may take a few seconds)."""
        deadline = time.monotonic() + wait
        while True:
            try:
                result = self.ping(client, proto, count=1)
            except LabError as exc:        # no virtual IP yet
                result = subprocess.CompletedProcess([], 1, "", str(exc))
            if result.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise LabError(f"no ping crossed {client}'s {proto} tunnel in {wait:.0f} s: "
                               f"{(result.stdout + result.stderr).strip()[-500:]} "
                               f"(see the logs under {self.lab.peers_dir})")
            progress(".")
            time.sleep(0.5)

    def _wait_up(self, proto: str, client_ip: str, server_ip: str, progress, wait: float) -> dict:
        deadline = time.monotonic() + wait
        while True:
            found = [s for s in self.sessions() if _is_up(s, proto, client_ip, server_ip)]
            if found:
                return found[0]
            if time.monotonic() > deadline:
                raise LabError(f"the {proto} session from {client_ip} to {server_ip} did not come up in "
                               f"{wait:.0f} s (see the logs under {self.lab.peers_dir} and the router's events)")
            progress(".")
            time.sleep(0.5)

    def _wait_through_aftr(self, name, proto, address, server_ip, directory, peers, progress, wait) -> dict:
        """Up under DS-Lite, where the router translates nothing and so has no session to show: a ping crossed
        the tunnel (waited for already), or for the pppd stand-in, its PPP frames came back through the AFTR."""
        how = "a ping crossed the tunnel"
        if proto in ("pptp", "l2tp") and not peers.real_ppp:
            how = "PPP frames came back"
            deadline = time.monotonic() + wait
            while not pptp.ppp_frames(directory):
                if time.monotonic() > deadline:
                    raise LabError(f"no PPP frame came back to {name}'s {proto} client through the AFTR in "
                                   f"{wait:.0f} s (see the logs under {directory})")
                progress(".")
                time.sleep(0.5)
        return {"id": None, "vpn": proto, "client": address, "inside": address, "remote": server_ip,
                "state": f"up through the AFTR ({how}; the B4 keeps no sessions)"}

    def ppp_flowing(self, client: str, proto: str, seconds: float = 2.0) -> bool:
        """Whether a client's pppd stand-in still receives PPP frames (its LCP echoes come back every half second):
        how a call is seen alive where the router keeps no session of it (DS-Lite)."""
        name, _, _ = self.client(client)
        directory = self.directory(name, proto)
        before = len(pptp.ppp_frames(directory))
        time.sleep(seconds)
        return len(pptp.ppp_frames(directory)) > before

    def wan_status(self) -> dict:
        """The lab's WAN mode, the provider's namespace and what its softwire endpoint is (``lab status``)."""
        if self.lab.wan == "ipv4":
            return {"mode": "ipv4"}
        from . import softwire
        status = {"mode": self.lab.wan, "provider": self.lab.provider, "endpoint": softwire.endpoint_kind()}
        if self.lab.wan == "ds-lite":           # the NAT that decides which VPNs pass
            status["nat44"] = softwire.aftr_pptp_helper_status(self.lab)
        return status

    def disconnect(self, client: str, proto: str) -> None:
        name, _, _ = self.client(client)
        state = self.load()
        entry = state["clients"].get(name, {}).pop(proto, None)
        if entry is None:
            raise LabError(f"{name} holds no {proto} session")
        _stop(entry["pid"])
        self.save(state)

    # -- views -----------------------------------------------------------------------------------------

    def sessions(self) -> list[dict]:
        try:
            with Client(str(self.lab.socket_path)) as client:
                return client.call("sessions")
        except ControlError:
            return []

    def profile(self) -> str:
        """The router's profile now."""
        with Client(str(self.lab.socket_path)) as client:
            return client.call("status")["nat"]["profile"]

    def status(self) -> dict:
        state = self.load()
        existing = set(self.lab.existing_namespaces())
        router = self.lab.router_pid()
        return {
            "prefix": self.lab.prefix,
            "peers": self.peers(state).to_dict(),
            "namespaces": sorted(existing),
            "wan": self.wan_status(),
            "router": {"pid": router, "running": router is not None and is_router_process(router),
                       "socket": str(self.lab.socket_path)},
            "servers": {name: {"address": s["address"], **({"address6": s["address6"]} if "address6" in s else {}),
                               **{proto: _alive(pid) for proto, pid in s["pids"].items()}}
                        for name, s in state["servers"].items()},
            "clients": {name: {proto: {"server": e["server"], "running": _alive(e["pid"]),
                                       "ipv6": e.get("ipv6", False)}
                               for proto, e in protos.items()}
                        for name, protos in state["clients"].items()},
            "vpn_sessions": [s for s in self.sessions() if is_vpn_flow(s, flow_protos(registry.descriptions()))],
        }


def is_vpn_flow_of(session: dict, proto: str, client_ip: str) -> bool:
    """A VPN's own flow (call, tunnel, association) of ``proto`` from ``client_ip``."""
    return (session.get("vpn") == proto and is_vpn_flow(session, flow_protos(registry.descriptions()))
            and session.get("client") == client_ip)


def is_tunnel_flow_of(session: dict, proto: str, client_ip: str, server_ip: str) -> bool:
    """The NAT session that carries a client's OpenVPN or WireGuard tunnel to a server."""
    l4, port = TUNNEL_PORTS[proto]
    return (session.get("proto") == l4 and str(session.get("inside", "")).rpartition(":")[0] == client_ip
            and session.get("remote") == f"{server_ip}:{port}")


def is_tunnel6_flow_of(session: dict, proto: str, client6: str | None, server6: str) -> bool:
    """The router's IPv6 session (forwarded untranslated through its firewall, RFC 6092) that carries a
    client's OpenVPN or WireGuard tunnel over IPv6 to a server; ``client6`` None: from any client."""
    l4, port = TUNNEL_PORTS[proto]
    if session.get("family") != "ipv6" or session.get("proto") != l4:
        return False
    remote, inside = _endpoint(session.get("remote")), _endpoint(session.get("inside"))
    return remote == (ip_address(server6), port) and (client6 is None or inside[0] == ip_address(client6))


def _endpoint(text) -> tuple:
    """("[2001:db8::1]:1194") -> (IPv6Address, 1194); (None, None) for what is not one."""
    host, _, port = str(text or "").rpartition(":")
    try:
        return ip_address(host.strip("[]")), int(port)
    except ValueError:
        return None, None


def _index(name: str) -> int:
    """c2 -> 2, s1 -> 1."""
    return int(name[1:])


def _is_up(session: dict, proto: str, client_ip: str, server_ip: str) -> bool:
    """Up as the router sees it: established, and for PPP (the stand-in's LCP too) frames both ways; for a
    tunnel with no helper, its NAT session with packets both ways."""
    if proto in TUNNELS:
        return (is_tunnel_flow_of(session, proto, client_ip, server_ip) and session["packets_in"] > 0
                and session["packets_out"] > 0)
    if not is_vpn_flow_of(session, proto, client_ip):
        return False
    both_ways = session["packets_in"] > 0 and session["packets_out"] > 0
    if proto == "pptp":
        return session.get("server") == server_ip and session.get("call_state") == "established" and both_ways
    if proto == "l2tp":
        return session.get("lns") == server_ip and session["state"] == "established" and both_ways and any(
            s["state"] == "established" for s in session.get("sessions", []))
    return session.get("gateway") == server_ip and session.get("ike_spi_r") is not None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:   # a zombie (its parent, the command that started it, is gone or has not waited) is not alive
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _stop(pid: int, wait: float = 5.0) -> None:
    """SIGTERM (the daemon hangs up cleanly: StopCCN, CDN, IKE delete), then SIGKILL to its process group."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + wait
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
