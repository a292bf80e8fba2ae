"""The router's TOML configuration, read into frozen dataclasses.

Every key is checked: an unknown key, a value of the wrong type or a bad
address raises ``ConfigError`` naming the key, so ``vpnrouter run`` can say
what is wrong in one line.  The sections are read by ``config_sections``;
what belongs to a VPN protocol (its ``[passthrough]`` name, its own section,
its ``[timeouts]`` keys) comes from the helper registry, so a new protocol
needs no line here.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Mapping

from .behaviour import NatBehaviour, Rule
from .helpers import registry

if TYPE_CHECKING:
    from .config_wan import WanLink


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
    """Idle timeouts in seconds (defaults from RFC 4787 REQ-5, RFC 5382 REQ-5, RFC 5508 REQ-1). The helpers' own
    keys of ``[timeouts]`` (the idle lifetimes of their flows) are in ``Config.helpers``."""
    udp: float = 300.0
    icmp: float = 60.0
    tcp_established: float = 7440.0
    tcp_transitory: float = 240.0
    tcp_incoming_syn: float = 6.0
    fragment: float = 30.0
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


@dataclass(frozen=True)
class HelperConfig:
    """One helper's own configuration: the keys of its section ``[<name>]`` and its keys of ``[timeouts]``, as
    its class declares them (``Helper.options``, ``Helper.timeouts``)."""
    settings: Mapping[str, str]
    timeouts: Mapping[str, float]


def default_helpers() -> dict[str, HelperConfig]:
    """Every registered helper's defaults."""
    return {cls.name: HelperConfig(MappingProxyType(cls.defaults()), MappingProxyType(cls.default_timeouts()))
            for cls in registry.helper_classes()}


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
    passthrough: dict = field(default_factory=lambda: dict.fromkeys(registry.names(), "multi"))
    """vpn -> "off" | "single" | "multi", for every registered helper."""
    timeouts: Timeouts = Timeouts()
    limits: Limits = Limits()
    forwards: tuple[Forward, ...] = ()
    nat: NatBehaviour = NatBehaviour()
    """RFC 4787 mapping, filtering, port assignment, hairpinning; an RFC 7597 port set; the profile."""
    rules: tuple[Rule, ...] = ()
    """``[[passthrough.rule]]``, in order: the first match decides."""
    default_action: str = "allow"
    """What a VPN attempt no rule matches gets."""
    fastpath: bool = True
    """``[dataplane] fastpath``: established flows forwarded by the compiled fast path (where it is built); false
    runs everything in Python."""
    helpers: dict = field(default_factory=lambda: default_helpers())
    """vpn -> ``HelperConfig``: each registered helper's own section and timeouts."""
    wan_link: "WanLink | None" = None
    """``[wan] mode = "map-e" | "ds-lite"``: the IPv6 WAN that carries the IPv4 (``router.config_wan``); None for a
    plain IPv4 WAN."""

    @property
    def wan_mode(self) -> str:
        return "ipv4" if self.wan_link is None else self.wan_link.mode


def check_tap(tap: str, where: str) -> str:
    """``<where>.tap``: a name Linux takes for an interface."""
    if not tap or len(tap) > 15 or "/" in tap or " " in tap:
        raise ConfigError(f"{where}.tap: not a valid interface name: {tap!r}")
    return tap


def port_mac(text: str | None, where: str, default: bytes) -> bytes:
    """``<where>.mac`` (``text``; None: not given, ``default``): a unicast MAC address."""
    if text is None:
        return default
    from .packet.frame import parse_mac
    try:
        mac = parse_mac(text)
    except ValueError:
        raise ConfigError(f"{where}.mac: not a MAC address such as 02:00:00:00:00:01") from None
    if mac[0] & 1:
        raise ConfigError(f"{where}.mac: a multicast address cannot be a port's address")
    return mac


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
    from .config_sections import parse_sections
    return parse_sections(data, source)
