"""The NAT's records in the state file: each mapping with its sessions, as plain values (helpers/records.py).

A mapping lives while it has sessions (``nat.py``), so the file holds the
mappings that have some, each with its sessions; a port forward's mapping
comes from the configuration and only its sessions are kept.  Reading checks
every field against the configuration (the LAN prefix, the port set, the
port forwards, the session limits) and against what was read before it (no
mapping, outside port, flow or id twice), and builds mappings and sessions
with their own constructors.  A helper's session gets back what the helper
wrote of it (``Helper.restore_session``).  Timeouts are this configuration's:
a session takes the lifetime of its state, as a new one would.
"""

from __future__ import annotations

from ..helpers.base import BadRecord, Record, Restore, restore_counters
from ..packet.frame import IpProto, ip_str
from .nat import DEPENDENCE, NatTable
from .natsession import Mapping, Session
from .tcpstate import TcpState

PROTOCOLS = (int(IpProto.ICMP), int(IpProto.TCP), int(IpProto.UDP))
FILTERING = {value: name for name, value in DEPENDENCE.items()}
TCP_STATES = tuple(state.value for state in TcpState)


def mapping_records(nat: NatTable) -> list[dict]:
    """Every mapping that has sessions, with them."""
    sessions: dict[Mapping, list[Session]] = {}
    for session in nat.out_sessions.values():
        sessions.setdefault(session.mapping, []).append(session)
    return [{"proto": m.proto, "inside_ip": m.inside_ip, "inside_port": m.inside_port, "outside_port": m.outside_port,
             "destination": list(m.key[3:]), "filtering": FILTERING[m.filtering], "static": m.static,
             "shared": m.shared, "sessions": [session_record(s) for s in mine]}
            for m, mine in sessions.items()]


def session_record(s: Session) -> dict:
    record = {"id": s.id, "remote_ip": s.remote_ip, "remote_port": s.remote_port, "created": s.created,
              "last_seen": s.last_seen, "packets_in": s.packets_in, "packets_out": s.packets_out,
              "bytes_in": s.bytes_in, "bytes_out": s.bytes_out}
    if s.state is not None:
        record["tcp_state"] = s.state.value
    if s.fixed_deadline:
        record["fixed_deadline"] = s.fixed_deadline
    if s.helper is not None:
        record["vpn"] = s.helper.name
        record["holds"] = s.holds
        mine = s.helper.session_record(s)
        if mine is not None:
            record["helper"] = mine
    return record


class NatRestore:
    """Reads the mappings and sessions of a state file into a NAT table."""

    def __init__(self, nat: NatTable, restore: Restore, helpers: dict, switches: dict[str, bool]):
        self.nat, self.restore, self.helpers, self.switches = nat, restore, helpers, switches

    def mappings(self, records: list) -> None:
        self.restore.each("mapping", records, self._mapping)

    def _mapping(self, r: Record) -> Mapping:
        nat, restore = self.nat, self.restore
        proto = r.integer("proto", 0, 255)
        if proto not in PROTOCOLS:
            raise BadRecord(f"protocol {proto} has no ports to map")
        inside_ip, inside_port, outside_port = restore.inside(r, "inside_ip"), r.port("inside_port"), \
            r.port("outside_port")
        if proto != IpProto.ICMP and not (inside_port and outside_port):
            raise BadRecord("port 0")
        destination = tuple(r.items("destination", most=1 if proto == IpProto.ICMP else 2))
        if destination:
            _destination(destination, restore)
        key = (proto, inside_ip, inside_port, *destination)
        static, shared = r.flag("static"), r.flag("shared")
        filtering = DEPENDENCE[r.text("filtering", "address-dependent", choices=DEPENDENCE)]
        sessions = r.items("sessions")
        mapping = nat.mappings.get(key)
        if static:
            if mapping is None or not mapping.static or mapping.outside_port != outside_port:
                raise BadRecord(f"its port forward ({_proto(proto)} {outside_port}) is no longer configured")
        else:
            if mapping is not None:
                raise BadRecord(f"{_proto(proto)} {ip_str(inside_ip)}:{inside_port} mapped twice")
            if not nat.port_allowed(outside_port):
                raise BadRecord(f"outside port {outside_port} is not in the port set")
            held = (proto, outside_port) in nat.by_outside or (not shared and (proto, outside_port) in nat.shared_ports)
            if held or (shared and outside_port != inside_port):
                raise BadRecord(f"outside {_proto(proto)} port {outside_port} taken twice")
            mapping = Mapping(proto, inside_ip, inside_port, outside_port, shared=shared, key=key,
                              filtering=filtering)
            nat.add_mapping(mapping)
        restore.each("session", sessions, lambda s: self._session(mapping, s))
        if not mapping.sessions and not mapping.static:
            nat.release(mapping)
            raise BadRecord("none of its sessions could be restored")
        return mapping

    def _session(self, mapping: Mapping, r: Record) -> Session:
        nat, restore, proto = self.nat, self.restore, mapping.proto
        remote_ip = restore.remote(r, "remote_ip")
        remote_port = r.port("remote_port", 0)
        if proto != IpProto.ICMP and not remote_port:
            raise BadRecord("remote port 0")
        if mapping.key[3:] and mapping.key[3:] != (remote_ip, remote_port)[:len(mapping.key) - 3]:
            raise BadRecord("its remote endpoint is not its mapping's destination")
        created, last_seen = restore.times(r)
        state = TcpState(r.text("tcp_state", "trans", choices=TCP_STATES)) if proto == IpProto.TCP else None
        helper = self._helper(r, mapping, remote_port)
        if nat.limit_reached(mapping.inside_ip):
            raise BadRecord("beyond the session limits")
        session = Session(restore.claim(r), mapping, remote_ip, remote_port, nat.wan_ip, created)
        if session.out_key in nat.out_sessions or (not mapping.shared and session.in_key in nat.in_sessions):
            raise BadRecord("the same flow twice")
        session.last_seen, session.state = last_seen, state
        session.fixed_deadline = r.time("fixed_deadline", 0.0) if state is TcpState.FIN_BOTH else 0.0
        restore_counters(session, r)
        session.timeout = nat.timeout_for(session)
        if helper is not None:
            session.helper, session.holds = helper, r.flag("holds", True)
            timeout = helper.timeout(session)
            if timeout is not None:
                session.timeout = timeout
            helper.restore_session(session, r.record("helper"), restore)
        nat.insert(session)
        return session

    def _helper(self, r: Record, mapping: Mapping, remote_port: int):
        """The helper a session belongs to, if it names one that would claim it now."""
        vpn = r.optional_text("vpn")
        if vpn is None:
            return None
        helper = self.helpers.get(vpn)
        if helper is None:
            raise BadRecord(f"no VPN helper {vpn!r}")
        if not self.switches.get(vpn):
            raise BadRecord(f"{vpn} passthrough is off")
        if not helper.attaches_to(mapping.proto, mapping.inside_port, remote_port):
            raise BadRecord(f"its ports are not {vpn}'s")
        return helper


def _destination(destination: tuple, restore: Restore) -> None:
    """A dependent mapping's destination: an address, and a port with address-and-port-dependent mapping."""
    restore.remote(Record({"destination": destination[0]}), "destination")
    if len(destination) == 2:
        Record({"destination port": destination[1]}).port("destination port")


def _proto(proto: int) -> str:
    return IpProto(proto).name.lower()
