"""VPN peers in the lab, kept across commands: servers on ``lab up``, clients on ``lab connect``.

Every server namespace runs pptpd, an xl2tpd LNS and a strongSwan gateway;
``connect CLIENT PROTO [SERVER]`` starts pptp-linux, an xl2tpd LAC or a
strongSwan client in that client's namespace and waits until the router
shows the session up.  Each daemon runs in its own mount namespace (see
``pptp.py``, ``l2tp.py``, ``ipsec.py``) and in a session of its own, so it
outlives the command that started it.  What runs where is written to
``vpn.json`` in the lab's state directory; ``lab down`` needs none of it: it
ends every process in the lab's namespaces.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from ..control.client import Client, ControlError
from . import ipsec, l2tp, pptp
from .topology import Lab, LabError, is_router_process

PROTOCOLS = ("pptp", "l2tp", "ipsec")
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

    def start_servers(self, progress=lambda msg: None) -> None:
        """pptpd, an xl2tpd LNS and a strongSwan gateway in every server namespace."""
        state = self.load()
        for j in range(1, self.lab.servers + 1):
            name, ns, address = f"s{j}", self.lab.server(j), self.lab.server_ip(j)
            progress(f"{name}: pptpd, xl2tpd LNS, strongSwan gateway")
            procs = {"pptp": pptp.start_pptpd(self.lab, ns, self.directory(name, "pptp")).pid,
                     "l2tp": l2tp.start_lns(self.lab, ns, self.directory(name, "l2tp")).proc.pid,
                     "ipsec": ipsec.start_gateway(self.lab, ns, self.directory(name, "ipsec"),
                                                  address=address).proc.pid}
            state["servers"][name] = {"address": address, "pids": procs}
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

    def connect(self, client: str, proto: str, server: str = "s1", progress=lambda msg: None) -> dict:
        """Bring a VPN session up from a client to a server; the router's view of it once it is up."""
        if proto not in PROTOCOLS:
            raise LabError(f"unknown VPN {proto!r}: {', '.join(PROTOCOLS)}")
        name, ns, address = self.client(client)
        sname, _, server_ip = self.server(server)
        state = self.load()
        if sname not in state["servers"]:
            raise LabError(f"{sname} runs no VPN servers: bring the lab up with `vpnrouter lab up`")
        mine = state["clients"].setdefault(name, {})
        if proto in mine and _alive(mine[proto]["pid"]):
            raise LabError(f"{name} already holds a {proto} session (to {mine[proto]['server']}): "
                           f"disconnect it first")
        directory = self.directory(name, proto)
        progress(f"{name}: {proto} to {sname} ({server_ip})")
        if proto == "pptp":
            pid = pptp.start_pptp_client(self.lab, ns, server_ip, directory).pid
        elif proto == "l2tp":
            lac = l2tp.start_lac(self.lab, ns, server_ip, directory)
            lac.connect()
            pid = lac.proc.pid
        else:
            charon = ipsec.start_client(self.lab, ns, directory, gateway=server_ip, identity=name)
            pid = charon.proc.pid
        mine[proto] = {"pid": pid, "server": sname, "server_ip": server_ip}
        self.save(state)
        if proto == "ipsec":
            ipsec.connect(charon)
            ipsec.ping(self.lab, charon, count=2)    # ESP both ways, so the association shows both SPIs
        return self._wait_up(proto, address, server_ip, progress)

    def _wait_up(self, proto: str, client_ip: str, server_ip: str, progress) -> dict:
        deadline = time.monotonic() + CONNECT_WAIT
        while True:
            found = [s for s in self.sessions() if _is_up(s, proto, client_ip, server_ip)]
            if found:
                return found[0]
            if time.monotonic() > deadline:
                raise LabError(f"the {proto} session from {client_ip} to {server_ip} did not come up in "
                               f"{CONNECT_WAIT:.0f} s (see the logs under {self.lab.peers_dir})")
            progress(".")
            time.sleep(0.5)

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

    def status(self) -> dict:
        state = self.load()
        existing = set(self.lab.existing_namespaces())
        router = self.lab.router_pid()
        return {
            "prefix": self.lab.prefix,
            "namespaces": sorted(existing),
            "router": {"pid": router, "running": router is not None and is_router_process(router),
                       "socket": str(self.lab.socket_path)},
            "servers": {name: {"address": s["address"],
                               **{proto: _alive(pid) for proto, pid in s["pids"].items()}}
                        for name, s in state["servers"].items()},
            "clients": {name: {proto: {"server": e["server"], "running": _alive(e["pid"])}
                               for proto, e in protos.items()}
                        for name, protos in state["clients"].items()},
            "vpn_sessions": [s for s in self.sessions() if s.get("vpn") and _is_flow(s)],
        }


def _is_flow(session: dict) -> bool:
    return session["proto"] in ("gre", "l2tp", "esp")


def _is_up(session: dict, proto: str, client_ip: str, server_ip: str) -> bool:
    if session.get("vpn") != proto or not _is_flow(session) or session.get("client") != client_ip:
        return False
    if proto == "pptp":
        return session.get("server") == server_ip and session.get("call_state") == "established"
    if proto == "l2tp":
        return session.get("lns") == server_ip and session["state"] == "established" and any(
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
