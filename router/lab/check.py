"""``vpnrouter lab check``: the compatibility matrix, measured on the lab's peers.

For each profile (applied to the running router with ``set_profile``), and
for each of PPTP, L2TP, IPsec (strongSwan, NAT-T behind the router), raw ESP
(synthetic, ``esp.py``: no real client here sends it through a NAT), and the
VPNs that need no passthrough (OpenVPN over UDP and TCP, WireGuard), it
connects one client to s1, then a second one to the same server while the
first stays up.  The outcome is ``"two"`` (works for two at once), ``"one"``
(works for one client only) or ``"fails"``, with the reason the router gave in
its events: refused by single passthrough, denied by a rule, portless under a
port set, passthrough off.  A session counts as working when the router shows
it up with traffic both ways (PPP frames, pings through the tunnel, ESP
answers).  Between attempts every session of the protocol is ended, so that
each starts from nothing; at the end the router gets back the profile it had.

On an IPv6 WAN (MAP-E, DS-Lite) OpenVPN and WireGuard are measured over IPv6
as well (``openvpn6``, ``openvpn-tcp6``, ``wireguard6``: from the clients' SLAAC
addresses to s1's IPv6 address, forwarded by the router's firewall, RFC 6092).
A lab on an IPv4 WAN has no IPv6: those cells are ``"n/a"``.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

from ..control.client import Client, ControlError
from .topology import LabError
from .vpns import TUNNELS, VpnLab, is_tunnel6_flow_of, is_tunnel_flow_of, is_vpn_flow_of

OVER_IPV6 = {"openvpn6": "openvpn", "openvpn-tcp6": "openvpn-tcp", "wireguard6": "wireguard"}
"""The kinds that are a tunnel over IPv6 (``lab connect --ipv6``), and the tunnel each is."""
KINDS = ("pptp", "l2tp", "ipsec", "esp", *TUNNELS, *OVER_IPV6)
LABELS = {"pptp": "PPTP", "l2tp": "L2TP", "ipsec": "IPsec NAT-T", "esp": "raw ESP", "openvpn": "OpenVPN UDP",
          "openvpn-tcp": "OpenVPN TCP", "wireguard": "WireGuard", "openvpn6": "OpenVPN UDP, IPv6",
          "openvpn-tcp6": "OpenVPN TCP, IPv6", "wireguard6": "WireGuard, IPv6"}
VPN_OF = {"pptp": "pptp", "l2tp": "l2tp", "ipsec": "ipsec", "esp": "ipsec"}
"""The router's helper for each kind that has one."""
CLIENT_SPIS = {"c1": 0x1000, "c2": 0x2000}
ESP_PACKETS = 10
OUTCOMES = {"two": "works for two at once", "one": "works for one client only", "fails": "fails",
            "n/a": "not measured: no IPv6 in an ipv4 lab"}
NOT_APPLICABLE = {"result": "n/a", "reason": "no IPv6 in an ipv4 lab", "one": None, "two": None}


def proto_of(kind: str) -> str:
    """What ``lab connect`` calls the VPN a kind measures: openvpn6 -> openvpn."""
    return OVER_IPV6.get(kind, kind)


class EventLog:
    """The router's events, collected by a thread from the moment it starts."""

    def __init__(self, socket_path: str):
        self.client = Client(socket_path, timeout=None)
        self.events: list[dict] = []
        self.thread = threading.Thread(target=self._collect, daemon=True)
        self.thread.start()

    def _collect(self) -> None:
        try:
            for event in self.client.events():
                self.events.append(event)
        except (ControlError, OSError, ValueError):
            pass

    def mark(self) -> int:
        return len(self.events)

    def reason_since(self, mark: int) -> str | None:
        """Why the router refused something since ``mark``, in words, from its events."""
        for event in self.events[mark:]:       # the vpn events name the holder or the rule; drops the rest
            kind = {"vpn": event.get("event"), "packet_dropped": event.get("reason")}.get(event.get("type"))
            if event.get("type") == "packet_dropped" and kind in ("refused_single", "denied_by_rule"):
                continue
            if kind == "refused_single":
                return f"refused by single passthrough (held by {event.get('holder')})"
            if kind == "denied":
                rule = event.get("rule")
                return f"denied by rule {rule}" if rule else "denied by the default action"
            if kind == "portless_under_port_set":
                return "portless under a port set (GRE and raw ESP have no port to share an address by)"
            if kind == "passthrough_off":
                return "passthrough off"
        return None

    def close(self) -> None:
        self.client.close()


class Check:
    def __init__(self, vpns: VpnLab, wait: float = 10.0, progress=lambda msg: None):
        self.vpns, self.lab = vpns, vpns.lab
        self.wait = wait
        self.progress = progress
        self.socket = str(self.lab.socket_path)
        self.responder: subprocess.Popen | None = None

    def call(self, method: str, *params):
        with Client(self.socket) as client:
            return client.call(method, *params)

    def run(self, profiles: list[str]) -> dict:
        """{profile: {kind: {"result", "reason", "one", "two"}}}."""
        original = self.call("status")["nat"]["profile"]
        events = EventLog(self.socket)
        try:
            results = {}
            for profile in profiles:
                self.call("set_profile", profile)
                results[profile] = {}
                for kind in KINDS:
                    self.progress(f"{profile}: {LABELS[kind]}")
                    results[profile][kind] = self.kind(kind, events)
            return results
        finally:
            self.call("set_profile", original)
            events.close()
            if self.responder is not None:
                self.responder.kill()
                self.responder.wait()

    def kind(self, kind: str, events: EventLog) -> dict:
        if kind in OVER_IPV6 and not self.lab.ipv6:
            return dict(NOT_APPLICABLE)
        self.reset(kind)
        try:
            one, why = self.attempt(kind, ["c1"], events)
            two = False
            if one:
                two, why = self.attempt(kind, ["c2"] if kind != "esp" else ["c1", "c2"], events)
                if two and kind != "esp" and not self.still_up(kind, "c1"):
                    two, why = False, "the first client's session broke when the second came"
        finally:
            self.reset(kind)
        result = "two" if two else "one" if one else "fails"
        return {"result": result, "reason": None if two else why, "one": one, "two": two}

    def attempt(self, kind: str, clients: list[str], events: EventLog) -> tuple[bool, str | None]:
        mark = events.mark()
        if kind == "esp":
            ok, detail = self.raw_esp(clients)
        else:
            try:
                self.vpns.connect(clients[0], proto_of(kind), "s1", wait=self.wait, ipv6=kind in OVER_IPV6)
                ok, detail = True, None
            except LabError as exc:
                ok, detail = False, str(exc).splitlines()[0][:200]
        time.sleep(0.3)        # events of the attempt reach the log
        return ok, None if ok else events.reason_since(mark) or detail

    def raw_esp(self, clients: list[str]) -> tuple[bool, str]:
        """Synthetic ESP from each client (at once) to s1, which answers each packet; all must be answered."""
        server = self.lab.server(1)
        if self.responder is None:
            self.responder = self.lab.popen_in(server, sys.executable, "-m", "router.lab.esp", "responder",
                                               stdout=subprocess.PIPE, text=True)
            self.responder.stdout.readline()
        runs = {name: self.lab.popen_in(self.vpns.client(name)[1], sys.executable, "-m", "router.lab.esp",
                                        "client", self.lab.server_ip(1), hex(CLIENT_SPIS[name]), str(ESP_PACKETS),
                                        stdout=subprocess.PIPE, text=True) for name in clients}
        answers = {name: int(proc.communicate(timeout=30)[0].strip() or 0) for name, proc in runs.items()}
        ok = all(count == ESP_PACKETS for count in answers.values())
        return ok, ", ".join(f"{name}: {count} of {ESP_PACKETS} answered" for name, count in answers.items())

    def still_up(self, kind: str, client: str) -> bool:
        if proto_of(kind) in TUNNELS:           # its tunnel still carries a ping
            return self.vpns.ping(client, proto_of(kind), count=1).returncode == 0
        if self.lab.wan == "ds-lite":           # the router keeps no session under DS-Lite: the tunnel itself
            if kind == "ipsec" or self.vpns.peers().real_ppp:
                return self.vpns.ping(client, kind, count=1).returncode == 0
            return self.vpns.ppp_flowing(client, kind)
        _, _, address = self.vpns.client(client)
        return any(is_vpn_flow_of(s, kind, address) and s["state"] == "established" for s in self.vpns.sessions())

    def of_kind(self, session: dict, kind: str) -> bool:
        """A router session this check made for ``kind``: the helper's, a tunnel's NAT session from c1 or c2, or
        a tunnel's IPv6 session to s1."""
        if kind in OVER_IPV6:
            return is_tunnel6_flow_of(session, proto_of(kind), None, self.lab.server_ip6(1))
        if kind not in TUNNELS:
            return session.get("vpn") == VPN_OF[kind]
        server = self.lab.server_ip(1)
        return any(is_tunnel_flow_of(session, kind, self.vpns.client(name)[2], server) for name in ("c1", "c2"))

    def reset(self, kind: str) -> None:
        """End every client and every router session of this kind, so the next attempt starts from nothing."""
        if kind != "esp":
            state = self.vpns.load()
            for name in ("c1", "c2"):
                if proto_of(kind) in state["clients"].get(name, {}):
                    self.vpns.disconnect(name, proto_of(kind))
        for session in self.vpns.sessions():
            if self.of_kind(session, kind):
                try:
                    self.call("close_session", session["id"])
                except ControlError:
                    pass                   # gone with its flow already


def across_wan_modes(vpns: VpnLab, modes: list[str], profiles: list[str], wait: float, progress, peers=None) -> dict:
    """The matrix for each WAN mode (the lab rebuilt in it: ``rebuild``), each profile under ipv4 and the profile
    in force under the others; the lab is left in the mode it had.  Columns: "ipv4 <profile>", "map-e",
    "ds-lite"."""
    from .cli import rebuild
    original = vpns.lab.wan
    results = {}
    try:
        for mode in modes:
            if vpns.lab.wan != mode:
                progress(f"rebuilding the lab with --wan {mode}")
                vpns = rebuild(vpns.lab, mode, peers, progress)
            check = Check(vpns, wait=wait, progress=progress)
            if mode == "ipv4":
                for profile, column in check.run(profiles).items():
                    results[f"ipv4 {profile}"] = column
            else:
                results[mode] = next(iter(check.run([check.call("status")["nat"]["profile"]]).values()))
    finally:
        if vpns.lab.wan != original:
            progress(f"rebuilding the lab with --wan {original}, as it was")
            rebuild(vpns.lab, original, peers, progress)
    return results


def table(results: dict) -> str:
    """Protocol x profile, then the reasons (but for n/a, whose reason is always the same: said once)."""
    profiles = list(results)
    width = max(12, *(len(p) + 2 for p in profiles))
    label_width = max(len(label) for label in LABELS.values()) + 2
    lines = [f"{'':<{label_width}}" + "".join(f"{p:>{width}}" for p in profiles)]
    notes: list[str] = []
    for kind in KINDS:
        cells = []
        for profile in profiles:
            entry = results[profile].get(kind, NOT_APPLICABLE)
            mark = ""
            if entry["reason"] and entry["result"] != "n/a":
                notes.append(f"{profile}, {LABELS[kind]}: {entry['reason']}")
                mark = f" [{len(notes)}]"
            cells.append(f"{entry['result'] + mark:>{width}}")
        lines.append(f"{LABELS[kind]:<{label_width}}" + "".join(cells))
    lines.append("")
    lines.append("two: works for two clients at once to the same server; one: for one client only; fails: not even one")
    if any(results[profile].get(kind, NOT_APPLICABLE)["result"] == "n/a" for profile in profiles for kind in KINDS):
        lines.append(f"n/a: {OUTCOMES['n/a']}")
    lines += [f"[{i}] {note}" for i, note in enumerate(notes, 1)]
    return "\n".join(lines)
