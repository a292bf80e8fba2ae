"""The control socket's schema: what the router sends, named once for every client (``ctl``, the TUI).

Pure constants and small helpers; the TUI imports this module, never the
data plane.  ``PROTOCOL_VERSION`` changes when a field or method changes
meaning; fields and methods are only ever added.
"""

from __future__ import annotations

PROTOCOL_VERSION = 3
"""1: the first control socket; 2: chunked session reads, event seq numbers, sessions_updated, close_session,
capture, version; 3: passthrough modes, NAT behaviour and profiles, access rules (below)."""

DEFAULT_SOCKET = "/run/vpnrouter/control.sock"

SESSION_FIELDS = ("id", "proto", "inside", "outside", "remote", "state", "idle", "age",
                  "packets_in", "packets_out", "bytes_in", "bytes_out")
"""Fields every session dict has; VPN sessions add ``vpn``, and a VPN's own flows the fields its helper declares."""

HELPER_FIELDS = ("name", "title", "key", "noun", "flow_noun", "flow_proto", "view", "counters", "drop_reasons",
                 "options", "timeouts")
"""``version()["helpers"]``: the router's VPN protocols, in the order of their switches, each described by its
helper (``router.helpers.base.Helper.description``): ``name`` (its switch, its ``vpn`` in sessions), ``title``,
``key`` (the dashboard's on/off key; its capital switches single/multi), ``noun`` ([one flow, several], as the
dashboard writes them), ``flow_noun``, ``flow_proto`` (the ``proto`` of its own flows: a call, a tunnel, an
association), ``view`` (``{"fields", "client", "server", "ids", "legend", "mark", "fixed", "ending_events",
"list_events"}``: how its flows look, ``router.helpers.spec.FlowView``; ``flowview.render_ids`` writes ``ids``),
``counters`` and ``drop_reasons`` (its counters in ``status()["counters"]``, drops as ``drop_<reason>``),
``options`` and ``timeouts`` (its configuration keys with their defaults). The protocols are the router's: a
client learns them here and names none itself."""

UPDATE_FIELDS = ("id", "state", "idle", "packets_in", "packets_out", "bytes_in", "bytes_out")
"""What a ``sessions_updated`` event says of each session that changed."""

EVENT_TYPES = ("session_opened", "session_closed", "switch_changed", "packet_dropped", "vpn", "sessions_updated",
               "profile_changed")
"""``session_opened`` and ``session_closed`` tell VPN flows (calls, tunnels, associations) as well as NAT sessions.
``switch_changed``: ``{"name", "on", "mode"}``. ``profile_changed``: ``{"name", "nat"}`` (``nat`` as in status).
``vpn`` events of every protocol include ``refused_single`` (``client``, ``server``, ``holder``: a second client
while one holds a protocol in single mode) and ``denied`` (``client``, ``server``, ``rule``: the 1-based index of
the rule that denied it, or null for the default action)."""

# -- version 3: behaviour (issue 10) ------------------------------------------------------------------------

PASSTHROUGH_MODES = ("off", "single", "multi")
"""``status()["passthrough_mode"][vpn]``. ``status()["passthrough"][vpn]`` stays a boolean: false only when off.
``set_passthrough [vpn, value]`` takes a boolean or "on" | "off" | "single" | "multi" ("on" brings back the mode
the switch had before it went off, "multi" at first) and answers ``{vpn: bool}``.
``status()["passthrough_holder"][vpn]``: in single mode the client address holding it, else null."""

NAT_MAPPINGS = ("endpoint-independent", "address-dependent", "address-and-port-dependent")
NAT_FILTERINGS = NAT_MAPPINGS
PORT_ASSIGNMENTS = ("preserve", "sequential", "random")
"""``status()["nat"]``: ``{"profile": name, "overrides": [keys set explicitly over it], "mapping", "filtering", "port_assignment", "hairpinning": bool,
"port_set": null | {"offset", "psid_length", "psid", "size", "ranges": [[first, last], ...]}}``.
``set_profile [name]`` applies a profile to new sessions and answers the new ``nat`` dict."""

RULE_ACTIONS = ("allow", "deny")
RULE_FIELDS = ("index", "vpn", "client", "server", "action", "hits")
"""``rules []`` answers ``{"default_action", "rules": [rule, ...]}``, each rule with these fields (``index`` from 1,
``client``/``server`` as prefixes such as "192.168.77.11/32", ``hits`` the attempts it decided).
``add_rule [{"vpn", "client", "server", "action"}, position?]`` (position from 1; default: last) and
``del_rule [index]`` answer the same. ``status()["rules"]``: ``{"default_action", "count"}``."""

NOTIFY_EVENT = "event"
NOTIFY_DROPPED = "dropped"
"""Sent to a subscriber that fell behind, just before it is disconnected: [{"reason": str, "seq": int}]."""
NOTIFY_CAPTURE = "capture"
"""[capture id, wall-clock time (Unix seconds), Ethernet frame bytes]."""
NOTIFY_CAPTURE_END = "capture_end"
"""[capture id, reason ("count" | "seconds" | "closed"), frames sent]."""

PORTS = ("lan", "wan")
PORT_COUNTERS = ("frames_in", "frames_out", "bytes_in", "bytes_out", "write_errors")
"""Per-port counters in ``status()["counters"]``, named ``<counter>_<port>``."""


def flow_protos(helpers: list[dict]) -> dict[str, str]:
    """vpn -> the ``proto`` of its own flows, from ``version()["helpers"]``."""
    return {h["name"]: h["flow_proto"] for h in helpers if isinstance(h, dict) and "name" in h}


def is_vpn_flow(session, protos: dict[str, str]) -> bool:
    """A VPN's own flow (call, tunnel, association), as opposed to a NAT session; ``session``: a session dict (or
    anything with its ``get``), ``protos`` from ``flow_protos``."""
    vpn = session.get("vpn")
    return vpn is not None and protos.get(vpn) == session.get("proto")

# -- added in version 3, no meaning changed: the process (issue 17) -------------------------------------------

STATUS_PYTHON = ("version", "implementation", "executable", "base_prefix")
"""``status()["python"]``: the interpreter that runs the router (``base_prefix`` "/usr" for Debian's).
``version []`` answers ``{"protocol", "router", "python", "helpers", "recognisers"}`` (``python``: its version;
``helpers``: ``HELPER_FIELDS``; ``recognisers``, since issue 20: ``RECOGNISER_FIELDS``)."""
STATUS_STATE = ("file", "interval", "restored", "refused", "fresh")
"""``status()["state"]``: the state file (null if none), its write interval, and what happened at start:
``restored`` null or ``{"written": Unix time, "age": seconds between writing and restoring, "writer":
{"vpnrouter", "python"}, "counts": {kind: n} ("mapping", "session", and each helper's "<name> <flow_noun>"),
"dropped": [{"kind", "reason", "count"}]}``; ``refused`` null or the one-line reason the file was
ignored; ``fresh`` true when ``vpnrouter run --fresh`` left it unread."""

# -- added in version 3, no meaning changed: the fast path (issue 19) ---------------------------------------------

STATUS_DATAPLANE = ("path", "why", "entries", "hits", "misses")
"""``status()["dataplane"]``: which path forwards established flows. ``path`` "fast" (the compiled flow cache in
front of the Python data plane) with ``entries`` (flows it forwards now), ``hits`` (frames it forwarded) and
``misses`` ({reason: frames it left to Python}); or ``path`` "python" with ``why`` ("[dataplane] fastpath = false",
or the fast path is not built)."""

# -- added in version 3, no meaning changed: WAN modes (issue 20) ---------------------------------------------

WAN_MODES = ("ipv4", "map-e", "ds-lite")
STATUS_WAN = ("mode", "ipv6", "gateway6", "map_e", "ds_lite", "passthrough_effective", "note")
"""``status()["wan"]``: how the router reaches the Internet (``[wan] mode``). ``mode`` one of ``WAN_MODES``;
``ipv6`` the router's IPv6 address on the WAN link with its prefix length ("2001:db8:ffff::2/64") and
``gateway6`` its IPv6 gateway, both null under "ipv4"; ``map_e`` null or a dict of ``STATUS_WAN_MAP_E`` (RFC 7597:
the CE's shared IPv4 address, its PSID and PSID length in bits, how many ports its port set holds, its MAP IPv6
address, the BR, the End-user IPv6 prefix, the largest IPv4 packet the softwire carries whole); ``ds_lite`` null
or a dict of ``STATUS_WAN_DS_LITE`` (RFC 6333: the AFTR, the B4's IPv4 address, the inner MTU);
``passthrough_effective`` false when the passthrough switches change nothing (under "ds-lite" the NAT is the
provider's AFTR), with ``note`` the one-line reason (null otherwise). A router older than WAN modes sends no
``wan``: its WAN is plain IPv4 (``wan_of``)."""
STATUS_WAN_MAP_E = ("ipv4", "psid", "psid_length", "ports", "ce_ipv6", "br", "end_user_prefix", "mtu")
STATUS_WAN_DS_LITE = ("aftr", "b4_ipv4", "mtu")
WAN_IPV4 = {"mode": "ipv4", "ipv6": None, "gateway6": None, "map_e": None, "ds_lite": None,
            "passthrough_effective": True, "note": None}
"""``status()["wan"]`` of a plain IPv4 WAN, and what a client takes for a router that sends none."""


def wan_of(status) -> dict:
    """``status["wan"]``, or a plain IPv4 WAN's for a router older than WAN modes (``status``: a status dict)."""
    wan = status.get("wan") if isinstance(status, dict) else None
    return wan if isinstance(wan, dict) else dict(WAN_IPV4)

# -- added in version 3, no meaning changed: VPNs recognised without a helper (issue 20) ------------------------

SESSION_RECOGNISED = ("recognised", "recognised_by")
"""Every NAT session and flow dict also has these (a router older than them sends neither: read them as null):
``recognised`` null or the name of a protocol that needs no helper (its traffic is one plain UDP or TCP flow),
as ``version()["recognisers"]`` lists it, and ``recognised_by`` null or one of ``RECOGNISED_BY``. Such a session
is a NAT session like any other (no ``vpn``, no switch); it was recognised once, when it opened, by its remote
port and its opening datagram's payload ("first bytes"), or, for TCP whose SYN carries none, by its port alone."""
RECOGNISED_BY = ("port", "first bytes")
RECOGNISER_FIELDS = ("name", "title", "proto", "port")
"""``version()["recognisers"]``: the protocols the router recognises without a helper, in the order a client
lists them, each with its ``name`` (``recognised`` in sessions), ``title``, ``proto`` ("udp" or "tcp") and the
server's well-known ``port``. A client learns them here and names none itself."""

# -- added in version 3, no meaning changed: native IPv6 (issue 20) ----------------------------------------------

IPV6_SWITCH_METHOD = "set_ipv6_switch"
"""``set_ipv6_switch [name, on]`` ("ipv6_<vpn>", a boolean): on an IPv6 WAN, whether the IPv6 firewall lets what
that VPN's helper declares (``Helper.ipv6_inbound``) in to LAN hosts unasked (RFC 6092 §3.2.4); answers
``status()["wan"]["ipv6_switches"]``. On an IPv4 WAN it is an error. IPv6 sessions (the firewall's records) are in
``sessions`` with ``"family": "ipv6"``, addresses as "[2001:db8::1]:port", ``outside`` equal to ``inside`` (no
translation) and ``state`` "open", "established", "closing" or "admitted" (let in by a switch)."""
