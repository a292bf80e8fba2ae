"""The router's TOML configuration, read into frozen dataclasses.

Every key is checked: an unknown key, a value of the wrong type or a bad
address raises ``ConfigError`` naming the key, so ``vpnrouter run`` can say
what is wrong in one line.
"""

from __future__ import annotations

import hashlib
import ipaddress
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from .behaviour import PROFILES, NatBehaviour, Rule, nat_behaviour, parse_rule, passthrough_mode
from .packet.frame import ip_int, parse_mac

PASSTHROUGH_NAMES = ("pptp", "l2tp", "ipsec")


class ConfigError(ValueError):
    """A configuration problem; ``str()`` is the one-line message for the user."""


@dataclass(frozen=True)
class PortConfig:
    tap: str
    """Name of the TAP device: an existing persistent TAP is attached, else one is created."""
    address: int
    """The router's IPv4 address on this port."""
    prefix_len: int
    """Length of the subnet prefix on this port."""
    mac: bytes
    """The router's MAC address on this port (default: locally administered, derived from the address)."""
    mtu: int = 1500
    """Largest IP datagram sent on this port; larger ones are fragmented or refused (RFC 1191)."""
    gateway: int | None = None
    """Next hop for destinations outside this port's subnet (WAN only)."""

    @property
    def netmask(self) -> int:
        return (0xFFFFFFFF << (32 - self.prefix_len)) & 0xFFFFFFFF

    @property
    def network(self) -> int:
        return self.address & self.netmask

    @property
    def broadcast(self) -> int:
        return self.network | (~self.netmask & 0xFFFFFFFF)

    def on_link(self, addr: int) -> bool:
        return addr & self.netmask == self.network


@dataclass(frozen=True)
class Timeouts:
    """Idle timeouts in seconds (defaults from RFC 4787 REQ-5, RFC 5382 REQ-5, RFC 5508 REQ-1)."""
    udp: float = 300.0
    icmp: float = 60.0
    tcp_established: float = 7440.0
    tcp_transitory: float = 240.0
    tcp_incoming_syn: float = 6.0
    fragment: float = 30.0
    gre: float = 600.0
    """Idle time after which a PPTP call's GRE mapping ends (Linux uses 10 minutes)."""
    natt: float = 600.0
    """Idle lifetime of a NAT-T session on UDP 4500: longer than any keepalive interval (RFC 3948 §4)."""
    esp: float = 600.0
    """Idle time after which a learned raw-ESP SPI is forgotten."""
    l2tp: float = 600.0
    """Idle lifetime of an L2TP tunnel and of its NAT sessions on UDP 1701 (HELLOs come every 60 s)."""
    arp_cache: float = 60.0
    arp_retry: float = 1.0


@dataclass(frozen=True)
class Limits:
    sessions: int = 65536
    """Sessions in total; a new flow beyond it is refused with ICMP 3/13."""
    sessions_per_host: int = 8192
    """Sessions per LAN host."""
    arp_queue: int = 8
    """Frames held per next hop while its address is being resolved."""
    arp_pending: int = 256
    """Next hops being resolved at once."""
    fragments: int = 64
    """Datagrams whose non-first fragments may wait for their first fragment."""
    icmp_errors_per_second: int = 200
    """ICMP errors the router sends per second (RFC 1812 §4.3.2.8)."""


@dataclass(frozen=True)
class Forward:
    """A static inbound mapping: ``proto`` traffic to the WAN address on ``port`` goes to ``to``."""
    proto: str
    port: int
    inside_ip: int
    inside_port: int


IKE_PORT = ("preserve", "translate")
L2TP_PORT = ("preserve", "translate")


@dataclass(frozen=True)
class L2tpConfig:
    port: str = "preserve"
    """"preserve": every LAC keeps UDP 1701 outside, demultiplexed by Tunnel ID; "translate": plain NAPT."""


@dataclass(frozen=True)
class IpsecConfig:
    ike_port: str = "preserve"
    """"preserve": every client's IKE leaves from UDP 500, demultiplexed by IKE SPIs; "translate": plain NAPT."""


@dataclass(frozen=True)
class Config:
    lan: PortConfig
    wan: PortConfig
    control_socket: str = "/run/vpnrouter/control.sock"
    control_mode: int = 0o600
    control_group: int | None = None
    """The group that may use the control socket (``[control] group``); its mode is then 0660 by default."""
    control_max_clients: int = 256
    """Connections the control socket serves at once; more are answered "busy" and closed."""
    state_file: str = ""
    """Where the router keeps its tables across a restart (``[state] file``; "" for nowhere). By default a file
    of this configuration's own (``default_state_file``), so that no other router takes up its tables."""
    state_interval: float = 60.0
    """Seconds between two writes of the state while running (``[state] interval``; 0: only at exit)."""
    passthrough: dict = field(default_factory=lambda: dict.fromkeys(PASSTHROUGH_NAMES, "multi"))
    """vpn -> "off" | "single" | "multi"."""
    timeouts: Timeouts = Timeouts()
    limits: Limits = Limits()
    forwards: tuple[Forward, ...] = ()
    nat: NatBehaviour = NatBehaviour()
    """RFC 4787 mapping, filtering, port assignment, hairpinning; an RFC 7597 port set; the profile."""
    rules: tuple[Rule, ...] = ()
    """``[[passthrough.rule]]``, in order: the first match decides."""
    default_action: str = "allow"
    """What a VPN attempt no rule matches gets."""
    ipsec: IpsecConfig = IpsecConfig()
    l2tp: L2tpConfig = L2tpConfig()


def _group_id(name: str) -> int:
    """The group id of ``[control] group``: a name, or a number."""
    import grp
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        if name.isdigit():
            return int(name)
        raise ConfigError(f"control.group: no group named {name!r} on this system") from None


def default_mac(port_index: int, address: int) -> bytes:
    """A stable locally administered MAC: 02:76:72 ("vr"), the port, the address's last two bytes."""
    return bytes([0x02, 0x76, 0x72, port_index, (address >> 8) & 255, address & 255])


STATE_DIR = "/var/lib/vpnrouter"


def default_state_file(config_path: str | Path) -> str:
    """The state file of the router a configuration file describes: one of its own, named after the file and
    its absolute path, so that a router started with another configuration (another lab) never shares it."""
    path = Path(config_path).resolve()
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:10]
    return f"{STATE_DIR}/{path.stem}-{digest}.state"


def load(path: str | Path) -> Config:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse(data, source=path)


def parse(data: dict, source: str | Path | None = None) -> Config:
    """The configuration in ``data`` (a parsed TOML document); ``source``: the file it was read from, which
    names the default state file (without one, there is none unless ``[state] file`` names it)."""
    _known(data, "", {"lan", "wan", "control", "passthrough", "timeouts", "limits", "forward", "nat", "ipsec", "l2tp",
                      "state"})
    lan = _port(_table(data, "lan", required=True), "lan", 0)
    wan = _port(_table(data, "wan", required=True), "wan", 1)
    if lan.on_link(wan.address) or wan.on_link(lan.address):
        raise ConfigError("wan.address: the LAN and WAN subnets overlap")
    if lan.gateway is not None:
        raise ConfigError("lan.gateway: only the WAN port has a gateway")
    if lan.tap == wan.tap:
        raise ConfigError("wan.tap: the LAN and WAN ports need different TAP devices")
    control = _table(data, "control")
    _known(control, "control", {"socket", "mode", "group", "max_clients"})
    passthrough = _table(data, "passthrough")
    _known(passthrough, "passthrough", {*PASSTHROUGH_NAMES, "rule", "default_action"})
    try:
        nat = nat_behaviour(_table(data, "nat"))
        modes = dict(PROFILES[nat.profile].passthrough)
        modes.update({name: passthrough_mode(passthrough[name], f"passthrough.{name}")
                      for name in PASSTHROUGH_NAMES if name in passthrough})
        rules = passthrough.get("rule", [])
        if not isinstance(rules, list):
            raise ValueError("passthrough.rule: must be an array of tables [[passthrough.rule]]")
        rules = tuple(parse_rule(entry, f"passthrough.rule[{i}]") for i, entry in enumerate(rules))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    default_action = _typed(passthrough, "passthrough", "default_action", str, "allow")
    if default_action not in ("allow", "deny"):
        raise ConfigError("passthrough.default_action: must be \"allow\" or \"deny\"")
    ipsec = _table(data, "ipsec")
    _known(ipsec, "ipsec", {"ike_port"})
    ike_port = _typed(ipsec, "ipsec", "ike_port", str, "preserve")
    if ike_port not in IKE_PORT:
        raise ConfigError(f"ipsec.ike_port: must be one of {', '.join(IKE_PORT)}")
    l2tp = _table(data, "l2tp")
    _known(l2tp, "l2tp", {"port"})
    l2tp_port = _typed(l2tp, "l2tp", "port", str, "preserve")
    if l2tp_port not in L2TP_PORT:
        raise ConfigError(f"l2tp.port: must be one of {', '.join(L2TP_PORT)}")
    group_name = _typed(control, "control", "group", str, "")
    group = _group_id(group_name) if group_name else None
    mode_text = _typed(control, "control", "mode", str, "0600" if group is None else "0660")
    try:
        mode = int(mode_text, 8)
    except ValueError:
        raise ConfigError("control.mode: an octal file mode such as \"0600\"") from None
    if not 0 <= mode <= 0o777 or mode & 0o007:
        raise ConfigError(f"control.mode: {mode_text} lets others than the owner and the group in; at most 0770")
    state = _table(data, "state")
    _known(state, "state", {"file", "interval"})
    state_interval = _typed(state, "state", "interval", float, 60.0)
    if state_interval < 0:
        raise ConfigError("state.interval: seconds, 0 or more (0: written only when the router stops)")
    max_clients = _typed(control, "control", "max_clients", int, 256)
    if not 1 <= max_clients <= 65536:
        raise ConfigError("control.max_clients: from 1 to 65536")
    return Config(
        lan=lan, wan=wan,
        control_socket=_typed(control, "control", "socket", str, "/run/vpnrouter/control.sock"),
        control_mode=mode,
        control_group=group,
        control_max_clients=max_clients,
        state_file=_typed(state, "state", "file", str, default_state_file(source) if source is not None else ""),
        state_interval=state_interval,
        passthrough=modes,
        timeouts=_numbers(Timeouts, _table(data, "timeouts"), "timeouts", float),
        limits=_numbers(Limits, _table(data, "limits"), "limits", int),
        forwards=_forwards(data.get("forward", []), lan),
        nat=nat, rules=rules, default_action=default_action,
        ipsec=IpsecConfig(ike_port=ike_port),
        l2tp=L2tpConfig(port=l2tp_port),
    )


def _table(data: dict, key: str, required: bool = False) -> dict:
    if key not in data:
        if required:
            raise ConfigError(f"{key}: missing table [{key}]")
        return {}
    value = data[key]
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: must be a table [{key}]")
    return value


def _known(table: dict, where: str, allowed: set[str]) -> None:
    for key in table:
        if key not in allowed:
            name = f"{where}.{key}" if where else key
            raise ConfigError(f"{name}: unknown key (known: {', '.join(sorted(allowed))})")


def _typed(table: dict, where: str, key: str, kind: type, default=None, required: bool = False):
    if key not in table:
        if required:
            raise ConfigError(f"{where}.{key}: missing")
        return default
    value = table[key]
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise ConfigError(f"{where}.{key}: must be a {kind.__name__}, not {value!r}")
    return value


def _port(table: dict, name: str, index: int) -> PortConfig:
    _known(table, name, {"tap", "address", "gateway", "mac", "mtu"})
    tap = _typed(table, name, "tap", str, required=True)
    if not tap or len(tap) > 15 or "/" in tap or " " in tap:
        raise ConfigError(f"{name}.tap: not a valid interface name: {tap!r}")
    text = _typed(table, name, "address", str, required=True)
    try:
        iface = ipaddress.IPv4Interface(text)
    except ValueError:
        raise ConfigError(f"{name}.address: not an IPv4 address with prefix length: {text!r}") from None
    if "/" not in text or not 8 <= iface.network.prefixlen <= 30:
        raise ConfigError(f"{name}.address: give a prefix length from /8 to /30, as in 192.168.77.1/24")
    if iface.ip in (iface.network.network_address, iface.network.broadcast_address):
        raise ConfigError(f"{name}.address: {iface.ip} is the subnet's network or broadcast address")
    address = ip_int(str(iface.ip))
    gateway = None
    if "gateway" in table:
        gw_text = _typed(table, name, "gateway", str)
        try:
            gw = ipaddress.IPv4Address(gw_text)
        except ValueError:
            raise ConfigError(f"{name}.gateway: not an IPv4 address: {gw_text!r}") from None
        if gw not in iface.network or gw == iface.ip:
            raise ConfigError(f"{name}.gateway: {gw} is not another address in {iface.network}")
        gateway = ip_int(str(gw))
    mac = default_mac(index, address)
    if "mac" in table:
        try:
            mac = parse_mac(_typed(table, name, "mac", str))
        except ValueError:
            raise ConfigError(f"{name}.mac: not a MAC address such as 02:00:00:00:00:01") from None
        if mac[0] & 1:
            raise ConfigError(f"{name}.mac: a multicast address cannot be a port's address")
    mtu = _typed(table, name, "mtu", int, 1500)
    if not 576 <= mtu <= 9000:
        raise ConfigError(f"{name}.mtu: must be from 576 to 9000")
    return PortConfig(tap=tap, address=address, prefix_len=iface.network.prefixlen, mac=mac, mtu=mtu,
                      gateway=gateway)


def _numbers(cls, table: dict, where: str, kind: type):
    names = {f.name for f in fields(cls)}
    _known(table, where, names)
    values = {}
    for name in names:
        if name in table:
            value = _typed(table, where, name, kind)
            if value <= 0:
                raise ConfigError(f"{where}.{name}: must be greater than zero")
            values[name] = value
    return cls(**values)


def _forwards(entries, lan: PortConfig) -> tuple[Forward, ...]:
    if not isinstance(entries, list):
        raise ConfigError("forward: must be an array of tables [[forward]]")
    result, seen = [], set()
    for i, entry in enumerate(entries):
        where = f"forward[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: must be a table")
        _known(entry, where, {"proto", "port", "to"})
        proto = _typed(entry, where, "proto", str, required=True)
        if proto not in ("tcp", "udp"):
            raise ConfigError(f"{where}.proto: must be \"tcp\" or \"udp\"")
        port = _typed(entry, where, "port", int, required=True)
        if not 1 <= port <= 65535:
            raise ConfigError(f"{where}.port: must be from 1 to 65535")
        to = _typed(entry, where, "to", str, required=True)
        try:
            host, _, to_port = to.rpartition(":")
            inside_ip, inside_port = ip_int(host), int(to_port)
            if not 1 <= inside_port <= 65535:
                raise ValueError
        except ValueError:
            raise ConfigError(f"{where}.to: give a LAN address and port, as in \"192.168.77.10:80\"") from None
        if not lan.on_link(inside_ip) or inside_ip == lan.address:
            raise ConfigError(f"{where}.to: {host} is not a host on the LAN subnet")
        if (proto, port) in seen:
            raise ConfigError(f"{where}.port: {proto} port {port} is forwarded twice")
        seen.add((proto, port))
        result.append(Forward(proto, port, inside_ip, inside_port))
    return tuple(result)
