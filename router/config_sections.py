"""``config.parse``, one function per section of the TOML file.

The VPN protocols' parts are read from the helper registry
(``router.helpers.registry``): ``[passthrough]`` takes one key per helper,
each helper with ``options`` has a section of its own named after it, and
``[timeouts]`` takes the core timeouts plus every helper's own.
"""

from __future__ import annotations

import ipaddress
from dataclasses import fields, replace
from pathlib import Path
from types import MappingProxyType

from .behaviour import PROFILES, nat_behaviour, parse_rule, passthrough_mode
from .config import (Config, ConfigError, Forward, HelperConfig, Limits, PortConfig, Timeouts, check_tap, default_mac,
                     default_state_file, port_mac)
from .config_wan import WanLink, parse_link, wan_mode
from .helpers import registry
from .packet.frame import ip_int

CORE_SECTIONS = ("lan", "wan", "control", "passthrough", "timeouts", "limits", "forward", "nat", "state", "dataplane")
DEFAULT_SOCKET = "/run/vpnrouter/control.sock"


def parse_sections(data: dict, source: str | Path | None) -> Config:
    """The whole document: every section checked, then one ``Config``."""
    helper_classes = registry.helper_classes()
    sections = {*CORE_SECTIONS, *(cls.name for cls in helper_classes if cls.options)}
    clash = sections & set(CORE_SECTIONS) & {cls.name for cls in helper_classes}
    if clash:
        raise ConfigError(f"helper {sorted(clash)[0]!r}: its name is a core section's")
    _known(data, "", sections)
    lan, wan, wan_link = _ports(data)
    control = _control(_table(data, "control"))
    state = _state(_table(data, "state"), source)
    passthrough = _table(data, "passthrough")
    try:
        nat = nat_behaviour(_table(data, "nat"))
        nat = _nat_under_wan(nat, _table(data, "nat"), wan_link)
        modes, rules, default_action = _passthrough(passthrough, nat.profile, helper_classes)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    timeouts, helper_timeouts = _timeouts(_table(data, "timeouts"), helper_classes)
    helpers = {cls.name: HelperConfig(MappingProxyType(_options(cls, _table(data, cls.name) if cls.options else {})),
                                      MappingProxyType(helper_timeouts[cls.name]))
               for cls in helper_classes}
    dataplane = _table(data, "dataplane")
    _known(dataplane, "dataplane", {"fastpath"})
    return Config(lan=lan, wan=wan, **control, **state, passthrough=modes, timeouts=timeouts,
                  fastpath=_typed(dataplane, "dataplane", "fastpath", bool, True),
                  limits=_numbers(Limits, _table(data, "limits"), "limits", int),
                  forwards=_forwards(data.get("forward", []), lan), nat=nat, rules=rules,
                  default_action=default_action, helpers=helpers, wan_link=wan_link)


def _ports(data: dict) -> tuple[PortConfig, PortConfig, WanLink | None]:
    """``[lan]`` and ``[wan]``, and how they go together; an IPv6 WAN's link (``router.config_wan``)."""
    lan = _port(_table(data, "lan", required=True), "lan", 0)
    wan_table = _table(data, "wan", required=True)
    mode = wan_mode(wan_table)
    wan_link = None
    if mode == "ipv4":
        wan = _port({k: v for k, v in wan_table.items() if k != "mode"}, "wan", 1)
    else:
        wan, wan_link = parse_link(wan_table, mode)
    if lan.on_link(wan.address) or wan.on_link(lan.address):
        raise ConfigError("wan.address: the LAN and WAN subnets overlap")
    if lan.gateway is not None:
        raise ConfigError("lan.gateway: only the WAN port has a gateway")
    if lan.tap == wan.tap:
        raise ConfigError("wan.tap: the LAN and WAN ports need different TAP devices")
    return lan, wan, wan_link


def _nat_under_wan(nat, table: dict, wan_link: WanLink | None):
    """Under MAP-E the NAT's port set is the CE's (RFC 7597 §5.1), and no other."""
    if wan_link is None or wan_link.ce is None:
        return nat
    if "port_set" in table:
        raise ValueError("nat.port_set: under wan.mode = \"map-e\" the port set comes from [wan.map_e]")
    return replace(nat, port_set=wan_link.ce.port_set)


def _control(control: dict) -> dict:
    """``[control]``: the socket, who may use it, how many at once."""
    _known(control, "control", {"socket", "mode", "group", "max_clients"})
    group_name = _typed(control, "control", "group", str, "")
    group = _group_id(group_name) if group_name else None
    mode_text = _typed(control, "control", "mode", str, "0600" if group is None else "0660")
    try:
        mode = int(mode_text, 8)
    except ValueError:
        raise ConfigError("control.mode: an octal file mode such as \"0600\"") from None
    if not 0 <= mode <= 0o777 or mode & 0o007:
        raise ConfigError(f"control.mode: {mode_text} lets others than the owner and the group in; at most 0770")
    max_clients = _typed(control, "control", "max_clients", int, 256)
    if not 1 <= max_clients <= 65536:
        raise ConfigError("control.max_clients: from 1 to 65536")
    return {"control_socket": _typed(control, "control", "socket", str, DEFAULT_SOCKET), "control_mode": mode,
            "control_group": group, "control_max_clients": max_clients}


def _state(state: dict, source) -> dict:
    """``[state]``: the state file (by default the configuration file's own) and how often it is written."""
    _known(state, "state", {"file", "interval"})
    interval = _typed(state, "state", "interval", float, 60.0)
    if interval < 0:
        raise ConfigError("state.interval: seconds, 0 or more (0: written only when the router stops)")
    default = default_state_file(source) if source is not None else ""
    return {"state_file": _typed(state, "state", "file", str, default), "state_interval": interval}


def _passthrough(passthrough: dict, profile: str, helper_classes) -> tuple[dict, tuple, str]:
    """``[passthrough]``: a mode per registered helper (the profile's by default), the rules, the default action.
    ``ValueError`` naming the key."""
    names = [cls.name for cls in helper_classes]
    _known(passthrough, "passthrough", {*names, "rule", "default_action"})
    modes = dict.fromkeys(names, PROFILES[profile].passthrough)
    modes.update({name: passthrough_mode(passthrough[name], f"passthrough.{name}")
                  for name in names if name in passthrough})
    rules = passthrough.get("rule", [])
    if not isinstance(rules, list):
        raise ValueError("passthrough.rule: must be an array of tables [[passthrough.rule]]")
    rules = tuple(parse_rule(entry, f"passthrough.rule[{i}]") for i, entry in enumerate(rules))
    default_action = _typed(passthrough, "passthrough", "default_action", str, "allow")
    if default_action not in ("allow", "deny"):
        raise ConfigError("passthrough.default_action: must be \"allow\" or \"deny\"")
    return modes, rules, default_action


def _options(cls, table: dict) -> dict:
    """A helper's own section (``[<name>]``): each of its declared options, one of its choices."""
    where = cls.name
    values = cls.defaults()
    _known(table, where, set(values))
    for option in cls.options:
        value = _typed(table, where, option.key, str, option.default)
        if value not in option.choices:
            raise ConfigError(f"{where}.{option.key}: must be one of {', '.join(option.choices)}")
        values[option.key] = value
    return values


def _timeouts(table: dict, helper_classes) -> tuple[Timeouts, dict[str, dict[str, float]]]:
    """``[timeouts]``: the core ones, and each helper's own (seconds, above zero)."""
    core = {f.name for f in fields(Timeouts)}
    owners = {t.key: cls for cls in helper_classes for t in cls.timeouts}
    clash = core & set(owners)
    if clash:
        raise ConfigError(f"helper {owners[sorted(clash)[0]].name!r}: timeout {sorted(clash)[0]!r} is a core one")
    _known(table, "timeouts", core | set(owners))
    values = {name: _positive(table, "timeouts", name, float) for name in core | set(owners) if name in table}
    helper_timeouts = {cls.name: {t.key: values.get(t.key, t.default) for t in cls.timeouts} for cls in helper_classes}
    return Timeouts(**{k: v for k, v in values.items() if k in core}), helper_timeouts


def _group_id(name: str) -> int:
    """The group id of ``[control] group``: a name, or a number."""
    import grp
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        if name.isdigit():
            return int(name)
        raise ConfigError(f"control.group: no group named {name!r} on this system") from None


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
    tap = check_tap(_typed(table, name, "tap", str, required=True), name)
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
    mac = port_mac(_typed(table, name, "mac", str) if "mac" in table else None, name, default_mac(index, address))
    mtu = _typed(table, name, "mtu", int, 1500)
    if not 576 <= mtu <= 9000:
        raise ConfigError(f"{name}.mtu: must be from 576 to 9000")
    return PortConfig(tap=tap, address=address, prefix_len=iface.network.prefixlen, mac=mac, mtu=mtu,
                      gateway=gateway)


def _numbers(cls, table: dict, where: str, kind: type):
    names = {f.name for f in fields(cls)}
    _known(table, where, names)
    return cls(**{name: _positive(table, where, name, kind) for name in names if name in table})


def _positive(table: dict, where: str, name: str, kind: type):
    value = _typed(table, where, name, kind)
    if value <= 0:
        raise ConfigError(f"{where}.{name}: must be greater than zero")
    return value


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
