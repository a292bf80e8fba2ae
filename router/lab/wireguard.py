"""WireGuard in the lab: a peer in every server namespace, one in a client's on ``lab connect``.

Like OpenVPN it needs no passthrough: to the router it is one UDP flow (to
port 51820).  Each server's interface holds ``10.95.0.1/24`` and knows every
client of the lab as a peer (``10.95.0.<10 + i>/32`` for client i), so several
clients may be connected at once.  The interface is the kernel's where it has
the module (the VM) and ``wireguard-go`` where it has not (this build
machine's kernel); each host's log says which.  ``wireguard-go`` keeps its
control socket in ``/run/wireguard``, so each peer runs in a mount namespace
of its own with a private ``/run``, as the PPP daemons do (``pptp.py``).

A server's ListenPort is bound for IPv4 and IPv6 both (by the kernel's module
and by wireguard-go alike), so in a lab with an IPv6 WAN a client may reach it
over IPv6 (``Endpoint = [2001:db8:5::10]:51820``); the tunnel inside stays IPv4.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from .topology import Lab
from .tools import LabError

PORT = 51820
INTERFACE = "wg-lab"
SERVER_TUNNEL_IP = "10.95.0.1"
"""The server's end of every client's tunnel, which ``lab ping`` pings."""
KERNEL_LINK = """ip link add {ifname} type wireguard
echo "wireguard: the kernel's module"
trap 'ip link del {ifname}; exit 0' TERM INT
"""
USERSPACE_LINK = """echo "wireguard: wireguard-go"
WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 wireguard-go -f {ifname} &
pid=$!
tries=0
until [ -S /run/wireguard/{ifname}.sock ]; do
    tries=$((tries + 1)); [ $tries -lt 100 ] || {{ echo "wireguard-go made no socket"; exit 1; }}; sleep 0.1
done
"""
HOLDER = """set -e
mount -t tmpfs tmpfs /run
mkdir -p /run/wireguard
pid=
{link}wg setconf {ifname} {conf}
ip address add {address} dev {ifname}
ip link set {ifname} up
echo "wireguard: up"
if [ -n "$pid" ]; then wait $pid; else while :; do sleep 1; done; fi
"""
"""The process that holds a peer's interface (the kernel's, or wireguard-go's): SIGTERM ends it and the
interface with it."""


def client_tunnel_ip(index: int) -> str:
    return f"10.95.0.{10 + index}"


def keys(lab: Lab, name: str) -> tuple[str, str]:
    """(private, public) key of a lab host, made with ``wg genkey`` on first use."""
    directory = lab.peers_dir / "wireguard-keys"
    directory.mkdir(parents=True, exist_ok=True)
    private = directory / f"{name}.key"
    if not private.exists():
        private.write_text(_wg("genkey"))
        private.chmod(0o600)
    key = private.read_text().strip()
    return key, _wg("pubkey", stdin=key).strip()


def _wg(*args: str, stdin: str | None = None) -> str:
    result = subprocess.run(["wg", *args], input=stdin, capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise LabError(f"wg {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def start_server(lab: Lab, ns: str, directory: Path, name: str, kernel: bool) -> subprocess.Popen:
    """A peer listening on 51820 that knows every client of the lab."""
    private, _ = keys(lab, name)
    peers = "".join(f"\n[Peer]\nPublicKey = {keys(lab, f'c{i}')[1]}\nAllowedIPs = {client_tunnel_ip(i)}/32\n"
                    for i in range(1, lab.clients + 1))
    conf = f"[Interface]\nPrivateKey = {private}\nListenPort = {PORT}\n{peers}"
    return _start(lab, ns, directory, conf, f"{SERVER_TUNNEL_IP}/24", kernel)


def start_client(lab: Lab, ns: str, directory: Path, name: str, index: int, server: str, server_name: str,
                 kernel: bool) -> subprocess.Popen:
    """A peer with the server (an IPv4 or an IPv6 address) as its only peer, keeping the router's mapping or
    firewall state open (PersistentKeepalive)."""
    private, _ = keys(lab, name)
    conf = (f"[Interface]\nPrivateKey = {private}\n\n[Peer]\nPublicKey = {keys(lab, server_name)[1]}\n"
            f"Endpoint = {endpoint(server)}\nAllowedIPs = {SERVER_TUNNEL_IP}/24\nPersistentKeepalive = 5\n")
    return _start(lab, ns, directory, conf, f"{client_tunnel_ip(index)}/24", kernel)


def endpoint(server: str) -> str:
    """``address:port``, an IPv6 address in brackets (RFC 3986 §3.2.2), as wg(8) takes it."""
    return f"[{server}]:{PORT}" if ":" in server else f"{server}:{PORT}"


def _start(lab: Lab, ns: str, directory: Path, conf: str, address: str, kernel: bool) -> subprocess.Popen:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "wg.conf"
    path.write_text(conf)
    path.chmod(0o600)
    link = (KERNEL_LINK if kernel else USERSPACE_LINK).format(ifname=INTERFACE)
    script = HOLDER.format(link=link, ifname=INTERFACE, conf=shlex.quote(str(path)), address=address)
    log = open(directory / "wireguard.log", "w")
    return lab.popen_in(ns, "unshare", "-m", "--propagation", "private", "sh", "-c", script, stdout=log,
                        stderr=subprocess.STDOUT, start_new_session=True)
