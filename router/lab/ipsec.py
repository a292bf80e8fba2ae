"""Real IPsec peers in the lab: strongSwan (charon) gateways and clients, IKEv2 with PSK and NAT-T.

Where the kernel has ESP (``kernel_esp=True``, see ``kernel.py``), charon
installs its SAs and policies in the kernel (``kernel-netlink``, XFRM).  The
build machines' kernel has none, so there every charon runs with
``kernel-libipsec`` (ESP in userspace over a TUN device ``ipsec0``), listed
before ``kernel-netlink`` in ``charon.load`` (../shared/REFERENCE.md, "Real
peers on this machine").  Each instance has a directory of its own holding its
``strongswan.conf`` (passed in ``STRONGSWAN_CONF``), its ``swanctl.conf``,
its vici socket and its log, and runs in its host's network namespace and a
private mount namespace with a tmpfs ``/run`` (so that several charons never
share a pid file).  ``swanctl`` talks to an instance over its own vici socket.

A gateway hands each client a virtual IP from a pool (``10.77.0.0/24`` by
default) and owns an inner address (``10.77.255.1``, on its ``lo``), which is
the only traffic selector on its side: a client that pings the inner address
from its virtual IP sends ESP (in UDP 4500 behind a NAT) through the tunnel.
"""

from __future__ import annotations

import re
import shlex
import signal
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .topology import Lab, LabError

CHARON = "/usr/lib/ipsec/charon"
POOL = "10.77.0.0/24"
INNER = "10.77.255.1"
PSK = "vpnrouter-lab-psk"
IKE_PROPOSALS = "aes128-sha256-modp2048"
ESP_PROPOSALS = "aes128-sha256"
PLUGINS = ("random nonce openssl aes sha1 sha2 hmac gmp pem pkcs1 x509 pubkey curve25519 kdf "
           "kernel-libipsec kernel-netlink socket-default vici")
KERNEL_ESP_PLUGINS = PLUGINS.replace("kernel-libipsec ", "")

PRIVATE_MOUNTS = """set -e
mount -t tmpfs tmpfs /run
mkdir -p /run/strongswan
"""

STRONGSWAN_CONF = """charon {{
  load = {plugins}
  load_modular = no
  port = 500
  port_nat_t = 4500
  retransmit_tries = {tries}
  retransmit_timeout = 1.0
  retransmit_base = 1.4
  install_routes = yes
  install_virtual_ip = yes
  filelog {{
    charon {{
      path = {log}
      time_format = %H:%M:%S
      default = 1
      ike = 2
      net = 1
      flush_line = yes
      append = no
    }}
  }}
  syslog {{
    daemon {{
      default = -1
    }}
  }}
  plugins {{
    vici {{
      socket = unix://{vici}
    }}
    kernel-libipsec {{
      allow_peer_ts = no
    }}
  }}
}}
swanctl {{
  socket = unix://{vici}
}}
"""


@dataclass
class Charon:
    """One charon instance in a namespace; ``role`` is "gateway" or "client"."""

    lab: Lab
    ns: str
    directory: Path
    role: str
    name: str
    proc: subprocess.Popen

    @property
    def vici(self) -> Path:
        return self.directory / "charon.vici"

    @property
    def conf(self) -> Path:
        return self.directory / "strongswan.conf"

    @property
    def log_path(self) -> Path:
        return self.directory / "charon.log"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def swanctl(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """``swanctl ARGS`` against this instance's vici socket (run in its namespace)."""
        cmd = ["swanctl", *args, "--uri", f"unix://{self.vici}"]
        result = subprocess.run(["ip", "netns", "exec", self.ns, *cmd], capture_output=True, text=True,
                                timeout=timeout, env=_env(self.conf))
        if check and result.returncode != 0:
            raise LabError(f"{' '.join(cmd)} in {self.ns}: {(result.stdout + result.stderr).strip()[-2000:]}")
        return result

    def load(self) -> None:
        self.swanctl("--load-all", "--noprompt", "--file", str(self.directory / "swanctl.conf"))

    def initiate(self, child: str | None = None, timeout: int = 30, check: bool = True) -> subprocess.CompletedProcess:
        """Bring the child SA (and its IKE SA) up; returns when charon says it is up or has failed."""
        return self.swanctl("--initiate", "--child", child or self.name, "--timeout", str(timeout),
                            check=check, timeout=timeout + 15)

    def terminate_ike(self, ike: str | None = None, timeout: int = 10) -> subprocess.CompletedProcess:
        return self.swanctl("--terminate", "--ike", ike or self.name, "--timeout", str(timeout),
                            check=False, timeout=timeout + 15)

    def list_sas(self) -> list[dict]:
        """The IKE SAs as dicts (vici's names: ``name``, ``state``, ``initiator-spi``, ``responder-spi``,
        ``local-host``, ``local-port``, ``remote-host``, ``remote-port``, ``local-vips``, ``remote-vips``,
        ``child-sas`` -> list of dicts with ``spi-in``, ``spi-out``, ``local-ts``, ``remote-ts``, ...)."""
        raw = self.swanctl("--list-sas", "--raw").stdout
        sas = []
        for line in raw.splitlines():
            line = line.strip()
            if not line.startswith("list-sa event"):
                continue
            tree = parse_raw(line[len("list-sa event"):])
            for name, sa in tree.items():
                sa = dict(sa)
                sa["name"] = name
                sa["child-sas"] = [dict(child, key=key) for key, child in sa.get("child-sas", {}).items()]
                sas.append(sa)
        return sas

    def established(self) -> list[dict]:
        return [sa for sa in self.list_sas() if sa.get("state") == "ESTABLISHED"
                and any(c.get("state") == "INSTALLED" for c in sa["child-sas"])]

    def virtual_ip(self) -> str | None:
        """The virtual IP a client was given (of its first established IKE SA), if any."""
        for sa in self.established():
            vips = sa.get("local-vips") or []
            if vips:
                return vips[0]
        return None

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _env(conf: Path) -> dict:
    return {"STRONGSWAN_CONF": str(conf), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


def parse_raw(text: str) -> dict:
    """Parse swanctl's ``--raw`` form: ``{key=value list=[a b] section {...}}`` into nested dicts."""
    text = text.strip()
    if not text.startswith("{"):
        raise ValueError(f"not a vici message: {text[:60]!r}")

    def section(i: int) -> tuple[dict, int]:
        out: dict = {}
        while i < len(text):
            while i < len(text) and text[i].isspace():
                i += 1
            if i >= len(text):
                break
            if text[i] == "}":
                return out, i + 1
            m = re.compile(r"([^\s=\{\}\[\]]+)\s*").match(text, i)
            if not m:
                raise ValueError(f"bad vici text at {i}: {text[i:i + 40]!r}")
            key, i = m.group(1), m.end()
            if text.startswith("{", i):
                out[key], i = section(i + 1)
            elif text.startswith("=[", i) or text.startswith("= [", i):
                end = text.index("]", i)
                out[key] = text[text.index("[", i) + 1:end].split()
                i = end + 1
            elif text.startswith("=", i):
                m = re.compile(r"=([^\s\{\}\[\]]*)").match(text, i)
                out[key], i = m.group(1), m.end()
            else:
                raise ValueError(f"bad vici text at {i}: {text[i:i + 40]!r}")
        return out, i

    tree, _ = section(1)
    return tree


def _write_conf(directory: Path, tries: int, kernel_esp: bool) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "strongswan.conf"
    plugins = KERNEL_ESP_PLUGINS if kernel_esp else PLUGINS
    conf.write_text(STRONGSWAN_CONF.format(plugins=plugins, tries=tries, log=directory / "charon.log",
                                           vici=directory / "charon.vici"))
    return conf


def _start_charon(lab: Lab, ns: str, directory: Path, role: str, name: str, wait: float = 15.0) -> Charon:
    conf = directory / "strongswan.conf"
    vici = directory / "charon.vici"
    vici.unlink(missing_ok=True)
    script = PRIVATE_MOUNTS + f"exec {shlex.quote(CHARON)}\n"
    out = open(directory / "charon.out", "w")
    proc = lab.popen_in(ns, "unshare", "-m", "--propagation", "private", "sh", "-c", script,
                        stdout=out, stderr=subprocess.STDOUT, env=_env(conf), start_new_session=True)
    charon = Charon(lab, ns, directory, role, name, proc)
    deadline = time.monotonic() + wait
    while not vici.exists():
        if proc.poll() is not None:
            raise LabError(f"charon in {ns} exited with {proc.returncode}: "
                           f"{(directory / 'charon.out').read_text()[-1000:]} {charon.log()[-2000:]}")
        if time.monotonic() > deadline:
            charon.stop()
            raise LabError(f"charon in {ns} did not open its vici socket: {charon.log()[-2000:]}")
        time.sleep(0.05)
    return charon


def start_gateway(lab: Lab, ns: str, directory: Path, *, address: str, pool: str = POOL, inner: str = INNER,
                  psk: str = PSK, name: str = "gw", tries: int = 3, kernel_esp: bool = False) -> Charon:
    """A strongSwan responder on ``address`` in ``ns``: any client with the PSK gets a virtual IP from
    ``pool`` and a tunnel to ``inner``/32 (added to the namespace's ``lo``)."""
    directory.mkdir(parents=True, exist_ok=True)
    lab.run_in(ns, "ip", "addr", "replace", f"{inner}/32", "dev", "lo")
    _write_conf(directory, tries, kernel_esp)
    (directory / "swanctl.conf").write_text(f"""connections {{
  {name} {{
    version = 2
    local_addrs = {address}
    proposals = {IKE_PROPOSALS}
    pools = {name}-pool
    local {{
      auth = psk
      id = {name}
    }}
    remote {{
      auth = psk
    }}
    children {{
      {name} {{
        local_ts = {inner}/32
        esp_proposals = {ESP_PROPOSALS}
        mode = tunnel
      }}
    }}
  }}
}}
pools {{
  {name}-pool {{
    addrs = {pool}
  }}
}}
secrets {{
  ike-{name} {{
    secret = "{psk}"
  }}
}}
""")
    charon = _start_charon(lab, ns, directory, "gateway", name)
    try:
        charon.load()
    except Exception:
        charon.stop()
        raise
    return charon


def start_client(lab: Lab, ns: str, directory: Path, *, gateway: str, identity: str, inner: str = INNER,
                 psk: str = PSK, name: str = "vpn", gateway_id: str = "gw", tries: int = 3,
                 kernel_esp: bool = False) -> Charon:
    """A strongSwan initiator in ``ns`` for the gateway at ``gateway`` (loaded, not yet initiated):
    it asks for a virtual IP and a tunnel to ``inner``/32."""
    _write_conf(directory, tries, kernel_esp)
    (directory / "swanctl.conf").write_text(f"""connections {{
  {name} {{
    version = 2
    remote_addrs = {gateway}
    proposals = {IKE_PROPOSALS}
    vips = 0.0.0.0
    local {{
      auth = psk
      id = {identity}
    }}
    remote {{
      auth = psk
      id = {gateway_id}
    }}
    children {{
      {name} {{
        remote_ts = {inner}/32
        esp_proposals = {ESP_PROPOSALS}
        mode = tunnel
      }}
    }}
  }}
}}
secrets {{
  ike-{name} {{
    id = {gateway_id}
    secret = "{psk}"
  }}
}}
""")
    charon = _start_charon(lab, ns, directory, "client", name)
    try:
        charon.load()
    except Exception:
        charon.stop()
        raise
    return charon


def connect(client: Charon, timeout: int = 30) -> dict:
    """Initiate the client's tunnel; its established IKE SA (as ``list_sas`` gives it)."""
    result = client.initiate(timeout=timeout, check=False)
    sas = client.established()
    if result.returncode != 0 or not sas:
        raise LabError(f"tunnel from {client.ns} did not come up: {(result.stdout + result.stderr)[-1500:]}\n"
                       f"charon log: {client.log()[-3000:]}")
    return sas[0]


def ping(lab: Lab, client: Charon, target: str = INNER, count: int = 3) -> subprocess.CompletedProcess:
    """Ping ``target`` from the client's virtual IP (through its tunnel)."""
    source = client.virtual_ip()
    if source is None:
        raise LabError(f"{client.ns} has no virtual IP")
    return lab.run_in(client.ns, "ping", "-n", "-c", str(count), "-i", "0.2", "-W", "2", "-I", source, target,
                      check=False, timeout=30)


# -- what reached the gateway: a tcpdump capture of its IKE, read without scapy ----------------------

IKE_SA_INIT = 34
IKE_FLAG_RESPONSE = 0x20


def start_capture(lab: Lab, ns: str, path: Path, bpf: str = "udp port 500 or udp port 4500",
                  wait: float = 10.0) -> subprocess.Popen:
    """tcpdump on ``eth0`` of ``ns`` writing every matching packet to ``path`` as it arrives."""
    err = open(path.with_suffix(".err"), "w+")
    proc = lab.popen_in(ns, "tcpdump", "-i", "eth0", "-n", "-U", "-s", "512", "-w", str(path), bpf,
                        stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    deadline = time.monotonic() + wait
    while "listening on" not in path.with_suffix(".err").read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise LabError(f"tcpdump in {ns} did not start: {path.with_suffix('.err').read_text()}")
        time.sleep(0.05)
    return proc


def stop_capture(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def udp_datagrams(path: Path) -> list[tuple[str, int, str, int, bytes]]:
    """(source, source port, destination, destination port, payload) of each IPv4 UDP datagram of an
    Ethernet pcap file."""
    data = path.read_bytes()
    if len(data) < 24:
        return []
    magic = data[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    out, i = [], 24
    while i + 16 <= len(data):
        _, _, caplen, _ = struct.unpack(endian + "IIII", data[i:i + 16])
        frame, i = data[i + 16:i + 16 + caplen], i + 16 + caplen
        if len(frame) < 14 + 20 or frame[12:14] != b"\x08\x00":
            continue
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        if ip[9] != 17 or len(ip) < ihl + 8:
            continue
        sport, dport, length = struct.unpack("!HHH", ip[ihl:ihl + 6])
        payload = ip[ihl + 8:ihl + length]
        out.append((socket_ntoa(ip[12:16]), sport, socket_ntoa(ip[16:20]), dport, payload))
    return out


def socket_ntoa(raw: bytes) -> str:
    return ".".join(str(b) for b in raw)


def ike_sa_init_requests(path: Path) -> list[dict]:
    """Every IKE_SA_INIT request in the capture (on 500, or on 4500 after the non-ESP marker):
    ``{"source", "sport", "destination", "dport", "ike_spi_i"}`` (SPI as 16 lowercase hex digits)."""
    requests = []
    for src, sport, dst, dport, payload in udp_datagrams(path):
        if dport == 4500 or sport == 4500:
            if payload[:4] != b"\0\0\0\0":
                continue
            payload = payload[4:]
        if len(payload) < 28 or payload[18] != IKE_SA_INIT or payload[19] & IKE_FLAG_RESPONSE:
            continue
        requests.append({"source": src, "sport": sport, "destination": dst, "dport": dport,
                         "ike_spi_i": payload[:8].hex()})
    return requests
