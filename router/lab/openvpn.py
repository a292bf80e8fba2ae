"""OpenVPN in the lab: a server for UDP and one for TCP in every server namespace, a client on ``lab connect``.

OpenVPN needs no passthrough: to the router it is one UDP or TCP flow, which
its NAT translates like any other.  Each server runs two instances (``--server``
mode, TLS, so several clients at once): UDP on 1194 with the tunnel network
``10.97.0.0/24`` and TCP on 1194 with ``10.96.0.0/24``; the server's own tunnel
address is the first of each.  The certificates (a lab CA, the servers' and
one per client, P-256, ``openssl``) are made once per lab, under its peers
directory.  OpenVPN runs on a TUN, which this machine's kernel has.

In a lab with an IPv6 WAN the servers listen on IPv6 as well: one dual-stack socket each (``udp6`` or
``tcp6-server`` without ``--local``: bound to [::], it takes IPv4 as IPv4-mapped addresses, RFC 4291
§2.5.5.2), and a client may reach them over IPv6 (``udp6`` or ``tcp6-client``).  The tunnel inside stays IPv4.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from .topology import Lab
from .tools import LabError

PORT = 1194


@dataclass(frozen=True)
class Flavour:
    name: str
    """What ``lab connect`` calls it."""
    proto: str
    """The router's session proto: "udp" or "tcp"."""
    server_proto: str
    client_proto: str
    network: str
    interface: str
    server_proto6: str
    """A dual-stack server's ``--proto``: IPv6, and IPv4 as mapped addresses."""
    client_proto6: str

    @property
    def server_tunnel_ip(self) -> str:
        """The server's end of the tunnel, which ``lab ping`` pings."""
        return self.network.rsplit(".", 1)[0] + ".1"


FLAVOURS = {f.name: f for f in (
    Flavour("openvpn", "udp", "udp", "udp", "10.97.0.0", "ovpn-udp", "udp6", "udp6"),
    Flavour("openvpn-tcp", "tcp", "tcp-server", "tcp-client", "10.96.0.0", "ovpn-tcp", "tcp6-server", "tcp6-client"),
)}
COMMON = ("--dev-type", "tun", "--topology", "subnet", "--verb", "3", "--keepalive", "5", "30",
          "--data-ciphers", "AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305")
EXTENSIONS = {"ca": "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
              "server": "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
              "client": "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"}
"""X.509v3 extensions: OpenVPN's ``--remote-cert-tls server`` checks the server's key usage (RFC 5280 §4.2.1.12)."""


def pki(lab: Lab) -> Path:
    """The lab's certificate directory, with its CA made on first use."""
    directory = lab.peers_dir / "openvpn-pki"
    directory.mkdir(parents=True, exist_ok=True)
    if not (directory / "ca.crt").exists():
        _openssl(directory, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650", "-subj", "/CN=vpnrouter lab CA",
                 "-config", _extension_file(directory, "ca", section=True), "-extensions", "ext")
    return directory


def certificate(lab: Lab, name: str, role: str) -> tuple[Path, Path, Path]:
    """(CA certificate, ``name``'s certificate, its key), made and signed by the lab CA on first use."""
    directory = pki(lab)
    crt, key = directory / f"{name}.crt", directory / f"{name}.key"
    if not crt.exists():
        _openssl(directory, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", key.name, "-out", f"{name}.csr", "-subj", f"/CN={name}")
        _openssl(directory, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "3650", "-out", crt.name, "-extfile", _extension_file(directory, role))
    return directory / "ca.crt", crt, key


def _extension_file(directory: Path, role: str, section: bool = False) -> str:
    path = directory / f"{role}.ext"
    body = EXTENSIONS[role]
    if section:   # a whole config for ``req -x509``: no distinguished-name prompts, our extensions only
        body = f"[req]\ndistinguished_name = dn\n[dn]\n[ext]\n{body}"
    path.write_text(body)
    return path.name


def _openssl(directory: Path, *args: str) -> None:
    result = subprocess.run(["openssl", *args], cwd=directory, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise LabError(f"openssl {args[0]} failed in {directory}: {result.stderr.strip()[-400:]}")


def start_server(lab: Lab, ns: str, directory: Path, flavour: Flavour, address: str) -> subprocess.Popen:
    """An OpenVPN server (``--server``: TLS, a client address each) on port 1194: of ``address`` alone, or in a
    lab with IPv6 of every address, IPv4 and IPv6."""
    ca, crt, key = certificate(lab, "server", "server")
    mask = "255.255.255.0"
    return _start(lab, ns, directory, "openvpn", "--dev", flavour.interface, *_server_socket(lab, flavour, address),
                  "--port", str(PORT), "--server", flavour.network, mask, "--ca", str(ca), "--cert", str(crt),
                  "--key", str(key), "--dh", "none", *COMMON)


def _server_socket(lab: Lab, flavour: Flavour, address: str) -> tuple[str, ...]:
    if lab.ipv6:
        return "--proto", flavour.server_proto6
    return "--proto", flavour.server_proto, "--local", address


def start_client(lab: Lab, ns: str, directory: Path, flavour: Flavour, server: str, name: str) -> subprocess.Popen:
    """An OpenVPN client to ``server``:1194 (an IPv4 or an IPv6 address) that takes the address the server
    pushes."""
    ca, crt, key = certificate(lab, name, "client")
    proto = flavour.client_proto6 if ":" in server else flavour.client_proto
    return _start(lab, ns, directory, "openvpn", "--client", "--dev", flavour.interface, "--proto", proto,
                  "--remote", server, str(PORT), "--nobind", "--remote-cert-tls", "server", "--ca", str(ca),
                  "--cert", str(crt), "--key", str(key), *COMMON)


def _start(lab: Lab, ns: str, directory: Path, *command: str) -> subprocess.Popen:
    directory.mkdir(parents=True, exist_ok=True)
    log = open(directory / "openvpn.log", "w")
    return lab.popen_in(ns, *command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                        cwd=str(directory))
