"""How the dashboard writes numbers, durations, each table's cells, the router's settings and the event log's
lines (pure: values in, strings out)."""

from __future__ import annotations

from router.control.flowview import render_ids

from .protocols import Protocol, Recogniser
from .session import Session


def human(n: float | None) -> str:
    """A count in at most five characters: 999, 1.23k, 45.6M."""
    if n is None:
        return "-"
    n = float(n)
    if n < 1000:
        return f"{n:.0f}" if n == int(n) or n >= 10 else f"{n:.1f}"
    for unit in ("k", "M", "G", "T", "P"):
        n /= 1000.0
        if n < 999.5:
            return f"{n:.3g}{unit}" if n < 100 else f"{n:.0f}{unit}"
    return f"{n:.0f}E"


def rate(n: float | None, unit: str) -> str:
    return "-" if n is None else f"{human(n)} {unit}"


def duration(seconds: float | None) -> str:
    """5s, 3m05, 2h03, 4d02: at most five characters."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}"
    return f"{s // 86400}d{s % 86400 // 3600:02d}"


def uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    days, s = divmod(s, 86400)
    text = f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{days}d {text}" if days else text


def pair(a: int, b: int) -> str:
    return f"{human(a)}/{human(b)}"


# -- the NAT table ----------------------------------------------------------------------------------

def nat_cells(s: Session, now: float) -> tuple[str, ...]:
    """id, proto, inside, outside, remote, state, idle, packets in/out, bytes in/out.  A session the router
    recognised shows its protocol's name where its state is the ordinary one (``ORDINARY_STATES``)."""
    state = s.recognised if s.recognised and s.state in ORDINARY_STATES else s.state
    outside = "IPv6, no NAT" if s.outside == s.inside and s.inside.startswith("[") else s.outside
    return (str(s.id), s.proto, s.inside, outside, s.remote, state, duration(s.idle(now)),
            pair(s.packets_in, s.packets_out), pair(s.bytes_in, s.bytes_out))


ORDINARY_STATES = frozenset({"active", "established"})
"""A UDP session's one state and an open TCP connection's: a recognised session's name says more."""


# -- the VPN pane -----------------------------------------------------------------------------------

def vpn_cells(s: Session, now: float, protocol: Protocol) -> tuple[str, ...]:
    """id, client, server, protocol IDs, state, mark, age, idle, packets in/out, bytes in/out: the fields its
    ``protocol``'s view names."""
    f = s.fields
    mark = "!" if protocol.mark and f.get(protocol.mark) else ""
    return (str(s.id), str(f.get(protocol.client) or s.inside), str(f.get(protocol.server) or s.remote),
            protocol_ids(s, protocol), s.state, mark, duration(s.age(now)), duration(s.idle(now)),
            pair(s.packets_in, s.packets_out), pair(s.bytes_in, s.bytes_out))


def protocol_ids(s: Session, protocol: Protocol) -> str:
    """The flow's protocol IDs in one short line, as its protocol's ``ids`` template writes them."""
    return render_ids(protocol.ids, s.fields)


def vpn_title(protocol: Protocol, count: int) -> str:
    """A protocol's group in the VPN pane: "<title>  2 <flows>  (<what the IDs mean>)"."""
    return f"{protocol.title}  {count} {protocol.noun(count)}  ({protocol.legend})"


# -- the VPN pane: protocols recognised without a helper ---------------------------------------------

def recognised_title(name: str, recogniser: Recogniser | None, count: int) -> str:
    """A recognised protocol's group: "<title>  1 flow  (UDP 51820, no helper)" (``name`` alone for one the
    router did not describe)."""
    flows = "flow" if count == 1 else "flows"
    if recogniser is None:
        return f"{name}  {count} {flows}  (no helper)"
    return f"{recogniser.title}  {count} {flows}  ({recogniser.proto.upper()} {recogniser.port}, no helper)"


def recognised_cells(s: Session, now: float) -> tuple[str, ...]:
    """A recognised session as the VPN pane's columns: its hosts as client and server, and in place of protocol
    IDs its name, its client's port and the one it was translated to (client>translated; the server's is its
    group's) and how the router recognised it."""
    client, inside_port = _host_port(s.inside)
    server = _host_port(s.remote)[0]
    outside_port = _host_port(s.outside)[1]
    by = f" by {s.recognised_by}" if s.recognised_by else ""
    ids = f"{s.recognised} {inside_port}>{outside_port}{by}"
    return (str(s.id), client, server, ids, s.state, "", duration(s.age(now)), duration(s.idle(now)),
            pair(s.packets_in, s.packets_out), pair(s.bytes_in, s.bytes_out))


def _host_port(endpoint: str) -> tuple[str, str]:
    """"192.168.77.11:40000" -> ("192.168.77.11", "40000")."""
    host, _, port = endpoint.rpartition(":")
    return (host, port) if host else (endpoint, "")


# -- details ----------------------------------------------------------------------------------------

def detail_lines(s: Session, now: float) -> list[tuple[str, str]]:
    """(name, value) for every field of a session or flow, protocol fields whole."""
    rows = [("id", str(s.id)), ("proto", s.proto)]
    if s.vpn:
        rows.append(("vpn", s.vpn))
    if s.recognised:
        rows.append(("recognised", f"{s.recognised}, by {s.recognised_by or '?'}, no helper"))
    rows += [("inside", s.inside), ("outside", s.outside), ("remote", s.remote), ("state", s.state),
             ("age", duration(s.age(now))), ("idle", duration(s.idle(now))),
             ("packets in/out", f"{s.packets_in} / {s.packets_out}"),
             ("bytes in/out", f"{s.bytes_in} / {s.bytes_out}")]
    for name, value in s.fields.items():
        rows.append((name, _field(value)))
    return rows


def _field(value) -> str:
    if isinstance(value, list):
        return "; ".join(_field(v) for v in value) or "-"
    if isinstance(value, dict):
        return " ".join(f"{k}={_field(v)}" for k, v in value.items())
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "-" if value is None else str(value)


# -- the router's settings (control protocol 3) -----------------------------------------------------

MAPPING_NAMES = {"endpoint-independent": "EIM", "address-dependent": "ADM", "address-and-port-dependent": "APDM"}
FILTERING_NAMES = {"endpoint-independent": "EIF", "address-dependent": "ADF", "address-and-port-dependent": "APDF"}
"""RFC 4787's short names of mapping (§4.1) and filtering (§5) behaviour."""


def nat_brief(nat: dict) -> str:
    """"profile default: EIM/ADF, hairpinning", and the port set's size if any ("custom" for no profile)."""
    name = nat.get("profile") or "custom"
    if nat.get("overrides"):
        name += " (changed)"
    mapping = MAPPING_NAMES.get(nat.get("mapping"), nat.get("mapping") or "?")
    filtering = FILTERING_NAMES.get(nat.get("filtering"), nat.get("filtering") or "?")
    text = f"profile {name}: {mapping}/{filtering}, {'hairpinning' if nat.get('hairpinning') else 'no hairpinning'}"
    port_set = nat.get("port_set")
    if isinstance(port_set, dict):
        size = port_set.get("size")
        text += f", port set of {size:,}" if isinstance(size, int) else ", port set"
    return text


def wan_brief(wan: dict) -> str | None:
    """``status()["wan"]`` in the header: "MAP-E <IPv4> PSID 3/4 4,032 ports BR <IPv6>", "DS-Lite AFTR <IPv6>";
    None for a plain IPv4 WAN (the header says nothing of it)."""
    mode = wan.get("mode")
    map_e, ds_lite = wan.get("map_e"), wan.get("ds_lite")
    if mode in (None, "ipv4"):
        return None
    if mode == "map-e" and isinstance(map_e, dict):
        ports = map_e.get("ports")
        size = f"{ports:,}" if isinstance(ports, int) else "?"
        return (f"MAP-E {map_e.get('ipv4')} PSID {map_e.get('psid')}/{map_e.get('psid_length')} {size} ports "
                f"BR {map_e.get('br')}")
    if mode == "ds-lite" and isinstance(ds_lite, dict):
        return f"DS-Lite AFTR {ds_lite.get('aftr')}"
    return f"WAN {mode}"


def passthrough_note(wan: dict) -> str | None:
    """Why the passthrough switches have no effect (``status()["wan"]["note"]``), or None while they have."""
    if wan.get("passthrough_effective", True):
        return None
    return wan.get("note") or f"the passthrough switches have no effect on this WAN ({wan.get('mode')})"


def rules_brief(rules: dict) -> str:
    """``status()["rules"]``: "access rules: 2, default deny"."""
    return f"access rules: {rules.get('count') or 'none'}, default {rules.get('default_action', '?')}"


RULE_COLUMNS = (("#", True), ("vpn", False), ("client", False), ("server", False), ("action", False),
                ("hits", True))
"""The rules screen's columns: (title, right-aligned)."""


def rule_cells(rule: dict) -> tuple[str, ...]:
    """index, vpn, client, server, action, hits: a row of the rules screen."""
    return (str(rule.get("index", "?")), str(rule.get("vpn", "any")), str(rule.get("client", "?")),
            str(rule.get("server", "?")), str(rule.get("action", "?")), f"{rule.get('hits', 0):,}")


# -- the event log ----------------------------------------------------------------------------------

def switch_note(title: str, on: bool, mode: str | None) -> str:
    """"<title> passthrough on (single)", "<title> passthrough off"."""
    state = "on" if on else "off"
    if on and mode in ("single", "multi"):
        state += f" ({mode})"
    return f"{title} passthrough {state}"


PROFILE_SCOPE = "  applies to new sessions; existing sessions keep the behaviour they were made with"


def profile_notes(name: str, nat: dict) -> list[str]:
    """What a ``profile_changed`` event says: the new behaviour, and whom it applies to."""
    return [f"NAT {nat_brief({'profile': name, **nat})}", PROFILE_SCOPE]


def vpn_note(event: dict, title: str) -> str:
    """A helper's ``vpn`` event as one line, after its protocol's ``title``: refusals in words, the others as
    their fields."""
    words = VPN_EVENT_WORDS.get(event.get("event"))
    if words is not None:
        return f"{title}: {words(event)}"
    rest = " ".join(f"{k}={_short(v)}" for k, v in event.items() if k not in ("type", "time", "seq", "vpn", "event"))
    return f"{title} {event.get('event', '')} {rest}".rstrip()


def _refused_single(event: dict) -> str:
    return (f"{event.get('client', '?')} -> {event.get('server', '?')} refused "
            f"(single passthrough held by {event.get('holder', '?')}){_suppressed(event)}")


def _denied(event: dict) -> str:
    rule = event.get("rule")
    by = "the default action" if rule is None else f"rule {rule}"
    return f"{event.get('client', '?')} -> {event.get('server', '?')} denied by {by}{_suppressed(event)}"


def _suppressed(event: dict) -> str:
    suppressed = event.get("suppressed") or 0
    return f"  (+{suppressed} not shown)" if suppressed else ""


VPN_EVENT_WORDS = {"refused_single": _refused_single, "denied": _denied}
"""``vpn`` events that read as a sentence, by their ``event``."""


def _short(value) -> str:
    if isinstance(value, list):
        return ",".join(_short(v) for v in value)
    return str(value)
