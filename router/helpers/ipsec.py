"""IPsec passthrough: IKE on UDP 500, NAT-T on UDP 4500 and raw ESP, for many clients to one gateway.

Theory of operation
-------------------
An *association* is what the router knows of one (client, gateway) pair:
the IKE SAs it has seen (initiator and responder SPIs, RFC 7296 §3.1; the
ISAKMP cookies of IKEv1, RFC 2408 §3.1, stand in the same place), the ESP
SPIs of each direction (RFC 4303 §2.1), the NAT sessions that carry its IKE
and NAT-T traffic, and the raw-ESP counters.  It is a ``Flow``: raw ESP is
forwarded by the data plane with its address deltas.

IKE (UDP 500).  With ``[ipsec] ike_port = "preserve"`` every client's IKE
leaves from port 500, because some gateways and the firewalls before them
accept nothing else: the NAT shares outside port 500 among them, and
inbound IKE from a gateway several clients talk to is demultiplexed by the
SPIs learned from the clients' own messages (``demux``).  A message whose
SPIs nobody announced (the gateway starting a new IKE SA, or rekeying one,
RFC 3715 §2.1 (n)) goes to the candidate that sent IKE to that gateway most
recently, and says so with an ``ike_ambiguous`` event.  ``"translate"``
leaves IKE to plain NAPT, as Linux does (RFC 3715 §2.1 (d)).

NAT-T (UDP 4500, RFC 3948 §2): four zero bytes (the non-ESP marker) start
an IKE message; a single 0xFF byte is a keepalive (§2.3); anything else is
ESP in UDP, whose SPI is learned for display.  The NAT's port mapping tells
clients apart; the sessions live ``timeouts.natt``, longer than keepalives.

Raw ESP (IP protocol 50) carries no port, and its SPI is chosen by the
receiver, so outbound ESP teaches (client, gateway, outbound SPI) and an
inbound SPI is unknown the first time it is seen.  It is paired by this
rule: the candidates are the gateway's associations awaiting an inbound SPI
(none learned since their latest outbound SPI appeared), or, if none await,
all the gateway's associations (IKE seen, or raw ESP sent); one candidate is learned
outright; among several the one whose outbound ESP was seen most recently
wins, the association is marked ambiguous and an ``esp_ambiguous`` event
names the candidates (RFC 3715 §2.1 (f): SPI demultiplexing can misdeliver).
ESP from an address no client talks IKE or ESP with is dropped; keys always include
the gateway's address, so an SPI learned for one gateway never matches
another's (RFC 3715 §3).

Malformed IKE is forwarded unparsed (a counter and a rate-limited event);
malformed ESP is dropped.  Nothing here reads the clock or raises on input.
"""

from __future__ import annotations

from ..packet.frame import IpProto, ip_str
from .base import Helper, Verdict
from .offload import SPLIT_NATT_SPI, Offload
from .ipsec_sa import (IKE_PORT, IPSEC_PORTS, KEEPALIVE, MAX_NATT_SPIS, MAX_SPIS, NATT_PORT, NO_SPI,
                       NON_ESP_MARKER, U32, UDP_HEADER, Association, EspSpi, IkeSa, IkeSession, ike_header,
                       spi_entry, spi_value)
from .records import BadRecord, Record, Restore, flow_record, restore_counters
from .spec import FlowView, Option, Timeout

class IpsecHelper(Helper):
    name = "ipsec"
    title = "IPsec"
    key = "i"
    flow_noun = "association"
    flow_nouns = ("SA", "SAs")
    flow_proto = "esp"
    view = FlowView(
        fields=("client", "gateway", "ike_spi_i", "ike_spi_r", "esp_spi_out", "esp_spi_in", "natt", "ports",
                "ambiguous"),
        client="client", server="gateway",
        ids="{natt:if|NAT-T|raw} ESP {esp_spi_out:spi}/{esp_spi_in:spi} IKE {ike_spi_i:spi}/{ike_spi_r:spi}",
        legend="NAT-T or raw, ESP SPIs out/in, IKE SPIs i/r", mark="ambiguous", fixed=("ports",))
    options = (Option("ike_port", "preserve", ("preserve", "translate"),
                      '"preserve": every client\'s IKE leaves from UDP 500, demultiplexed by IKE SPIs; "translate": '
                      'plain NAPT.'),)
    timeouts = (Timeout("natt", 600.0, "Idle lifetime of a NAT-T session on UDP 4500: longer than any keepalive "
                                       "interval (RFC 3948 §4)."),
                Timeout("esp", 600.0, "Idle time after which a learned raw-ESP SPI is forgotten."))
    counters = ("ipsec_malformed", "ipsec_natt_keepalives", "ipsec_ike_sas_up", "ipsec_ike_ambiguous",
                "ipsec_esp_learned", "ipsec_esp_ambiguous")
    drop_reasons = (
        "esp_malformed",            # shorter than SPI and sequence number, or SPI 0 (RFC 4303 §2.1)
        "esp_no_association",       # raw ESP from an address no client sends ESP to, or an unknown SPI
    )
    ip_protocols = (IpProto.ESP,)
    ipv6_inbound = ((IpProto.ESP, 0), (51, 0), (IpProto.UDP, 500), (IpProto.UDP, 4500))
    """RFC 6092 §3.2.4 (REC-21, REC-22 and the IKE recommendation after them): ESP, AH and IKE (with its NAT-T
    port, RFC 3948) in to LAN hosts: what routers call "IPv6 IPsec passthrough" (``[wan] ipv6_ipsec``)."""
    filters_by_address = True

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self.preserve = self.settings["ike_port"] == "preserve"
        self.associations: dict[tuple[int, int], Association] = {}
        """(inside address, remote address) -> association."""
        self.by_gateway: dict[int, list[Association]] = {}
        self.esp_out: dict[tuple[int, int, int], EspSpi] = {}
        """(inside address, remote address, SPI) -> raw-ESP SPI leaving the LAN."""
        self.esp_in: dict[tuple[int, int], EspSpi] = {}
        """(remote address, SPI) -> raw-ESP SPI arriving from the WAN."""

    # -- IKE and NAT-T sessions (port-attached) ---------------------------------------------------

    def attaches_to(self, proto, inside_port, remote_port) -> bool:
        return proto == IpProto.UDP and (inside_port in IPSEC_PORTS or remote_port in IPSEC_PORTS)

    def shares_port(self, proto, inside_port, remote_port) -> bool:
        return self.preserve and inside_port == IKE_PORT and remote_port == IKE_PORT

    def timeout(self, session) -> float | None:
        return self.ctx.timeouts.natt if NATT_PORT in (session.inside_port, session.remote_port) else None

    def packet(self, session, frame, ip, l4, outbound, now) -> Verdict:
        state = session.helper_state or self._attach(session, now)
        at = l4 + UDP_HEADER
        size = len(frame) - at
        if not state.natt:
            self._ike(session, state, frame, at, size, outbound, now)
        elif size >= 8 and (frame[at] or frame[at + 1] or frame[at + 2] or frame[at + 3]):
            spi = U32.unpack_from(frame, at)[0]            # ESP in UDP (RFC 3948 §2.1)
            if spi != (state.spi_out if outbound else state.spi_in):
                self._natt_spi(session, state, spi, outbound, now)
        elif size == 1 and frame[at] == KEEPALIVE:         # RFC 3948 §2.3
            self.ctx.count("ipsec_natt_keepalives")
        elif size >= 4 and frame[at:at + 4] == NON_ESP_MARKER:
            self._ike(session, state, frame, at + 4, size - 4, outbound, now)
        else:
            self._malformed(f"NAT-T datagram of {size} bytes", session, now)
        return Verdict.FORWARD

    def demux(self, candidates, frame, ip, l4, now):
        """Inbound IKE to the shared port 500: the client whose IKE SA the SPIs name."""
        at = l4 + UDP_HEADER
        header = ike_header(frame, at, len(frame) - at)
        if header is None:
            self._malformed("IKE to the shared port 500 that names no SA", candidates[0], now)
            return None
        spi_i, spi_r = header
        for session in candidates:
            state = session.helper_state
            sa = state.assoc.ike_sas.get(spi_i) if state else None
            if sa is not None and (spi_r == NO_SPI or sa.spi_r in (NO_SPI, spi_r)):
                return session
        chosen = max(candidates, key=lambda s: s.helper_state.last_out if s.helper_state else 0.0)
        self.ctx.count("ipsec_ike_ambiguous")
        self.ctx.event("ike_ambiguous", {
            "gateway": ip_str(chosen.remote_ip), "ike_spi_i": spi_i.hex(), "ike_spi_r": spi_r.hex(),
            "candidates": [ip_str(s.inside_ip) for s in candidates], "chosen": ip_str(chosen.inside_ip),
            "rule": "the client that sent IKE to this gateway most recently"}, now)
        return chosen

    def closed(self, session, now) -> None:
        state = session.helper_state
        if state is None:
            return
        assoc = state.assoc
        if session in assoc.sessions:
            assoc.sessions.remove(session)
        if not assoc.sessions and not assoc.esp_out and not assoc.esp_in:
            self._end(assoc, "sessions_closed", now)

    def describe(self, session):
        state = session.helper_state
        if state is None:
            return [("natt", NATT_PORT in (session.inside_port, session.remote_port))]
        details = state.assoc.details()
        return [("association", state.assoc.id), ("client", details["client"]), ("gateway", details["gateway"]),
                ("ike_spi_i", details["ike_spi_i"]), ("ike_spi_r", details["ike_spi_r"]), ("natt", state.natt)]

    def _attach(self, session, now) -> IkeSession:
        inside_is_client = not session.mapping.static   # a port forward makes the inside host the gateway
        assoc = self._association(session.inside_ip, session.remote_ip, inside_is_client, now)
        assoc.sessions.append(session)
        state = session.helper_state = IkeSession(assoc, NATT_PORT in (session.inside_port, session.remote_port))
        return state

    def _ike(self, session, state: IkeSession, frame, at: int, size: int, outbound: bool, now: float) -> None:
        header = ike_header(frame, at, size)
        if header is None:
            return self._malformed(f"IKE header ({size} bytes)", session, now)
        if outbound:
            state.last_out = now
        assoc = state.assoc
        assoc.last_seen = now
        spi_i, spi_r = header
        sa = assoc.ike_sas.get(spi_i)
        if sa is None:
            sa = assoc.ike_sas[spi_i] = IkeSa(spi_i)
        if spi_r != NO_SPI and sa.spi_r != spi_r:
            sa.spi_r = spi_r
            if not sa.up:
                sa.up = True
                self.ctx.event("ike_up", {**assoc.summary(), "ike_spi_i": spi_i.hex(), "ike_spi_r": spi_r.hex(),
                                          "natt": state.natt}, now, counter="ipsec_ike_sas_up")

    def offload(self, session, outbound, frame, l4):
        """ESP in UDP on a NAT-T session, by its SPI: the one this session last carried that way (another SPI
        comes here, as ``_natt_spi`` keeps the last one); IKE and keepalives never."""
        state = session.helper_state
        at = l4 + UDP_HEADER
        if state is None or not state.natt or len(frame) < at + 8:
            return None
        spi = U32.unpack_from(frame, at)[0]
        if not spi or spi != (state.spi_out if outbound else state.spi_in):
            return None
        return Offload(payload_id=spi, split=SPLIT_NATT_SPI)

    def offload_flow(self, flow, proto, outbound, frame, l4):
        """Raw ESP by a learned SPI (the fast path keeps its last use, as ``flow_out`` and ``flow_in`` do)."""
        spi = U32.unpack_from(frame, l4)[0]
        entry = (self.esp_out.get((flow.inside_ip, flow.remote_ip, spi)) if outbound
                 else self.esp_in.get((flow.remote_ip, spi)))
        if entry is None or entry.assoc is not flow:
            return None
        return Offload(payload_id=spi, owners=(entry,), account=entry.used)

    def _natt_spi(self, session, state: IkeSession, spi: int, outbound: bool, now: float) -> None:
        """A new ESP-in-UDP SPI on a NAT-T session: remembered for display (the fast path forwards only the last
        one each way)."""
        self.ctx.withdraw(session)
        if outbound:
            state.spi_out = spi
        else:
            state.spi_in = spi
        assoc = state.assoc
        seen = assoc.natt_out if outbound else assoc.natt_in
        if spi in seen:
            return
        seen.append(spi)
        del seen[:-MAX_NATT_SPIS]
        self._learned(assoc, spi, outbound, True, now)

    def _malformed(self, what: str, session, now: float) -> None:
        where = f"{ip_str(session.inside_ip)}:{session.inside_port} <-> {ip_str(session.remote_ip)}:" \
                f"{session.remote_port}"
        self.ctx.problem("ipsec_malformed", f"{what} on {where}; forwarded unparsed", now)

    # -- raw ESP (IP protocol 50, RFC 4303) ---------------------------------------------------------

    def flow_out(self, proto, frame, l4, size, src, dst, now):
        spi = self._spi(frame, l4, size, src, now)
        if spi is None:
            return None
        entry = self.esp_out.get((src, dst, spi))
        if entry is None:
            if (src, dst) not in self.associations and not (self.ctx.admit(src, dst, now)
                                                            and self.ctx.room(src, now)):
                return None             # raw ESP opening an association: a VPN attempt (rules, single mode, limits)
            entry = self._learn_out(src, dst, spi, now)
        entry.last_seen = now
        assoc = entry.assoc
        assoc.last_out = now
        return assoc

    def flow_in(self, proto, frame, l4, size, src, now):
        spi = self._spi(frame, l4, size, src, now)
        if spi is None:
            return None
        entry = self.esp_in.get((src, spi))
        if entry is None:
            entry = self._pair_in(src, spi, now)
            if entry is None:
                return None
        entry.last_seen = now
        return entry.assoc

    def _spi(self, frame, l4, size, src, now) -> int | None:
        if size < 8:
            self.ctx.drop("esp_malformed", f"{size} bytes of ESP from {ip_str(src)}", now)
            return None
        spi = U32.unpack_from(frame, l4)[0]
        if not spi:
            self.ctx.drop("esp_malformed", f"ESP with SPI 0 from {ip_str(src)}", now)
            return None
        return spi

    def _learn_out(self, inside: int, remote: int, spi: int, now: float) -> EspSpi:
        assoc = self._association(inside, remote, True, now)
        entry = self.esp_out[(inside, remote, spi)] = assoc.esp_out[spi] = EspSpi(assoc, spi, True, now)
        assoc.awaiting = True
        self._evict(assoc, assoc.esp_out, now)
        self._learned(assoc, spi, True, False, now)
        return entry

    def _pair_in(self, remote: int, spi: int, now: float) -> EspSpi | None:
        """An inbound SPI seen for the first time: paired by the rule in the module's docstring."""
        known = self.by_gateway.get(remote)
        if not known:
            self.ctx.drop("esp_no_association", f"SPI {spi:08x} from {ip_str(remote)}", now)
            return None
        candidates = [a for a in known if a.awaiting] or known
        chosen = max(candidates, key=lambda a: a.last_out)
        if len(candidates) > 1:
            chosen.ambiguous = True
            self.ctx.event("esp_ambiguous", {
                "gateway": ip_str(remote), "spi": f"{spi:08x}", "candidates": [ip_str(a.client) for a in candidates],
                "chosen": ip_str(chosen.client), "rule": "the candidate whose outbound ESP was seen most recently"},
                now, counter="ipsec_esp_ambiguous")
        entry = self.esp_in[(remote, spi)] = chosen.esp_in[spi] = EspSpi(chosen, spi, False, now)
        chosen.awaiting = False
        self._evict(chosen, chosen.esp_in, now)
        self._learned(chosen, spi, False, False, now)
        return entry

    def _learned(self, assoc: Association, spi: int, outbound: bool, natt: bool, now: float) -> None:
        self.ctx.event("esp_learned", {**assoc.summary(), "spi": f"{spi:08x}",
                                       "direction": "out" if outbound else "in", "natt": natt},
                       now, counter="ipsec_esp_learned")

    def _evict(self, assoc: Association, spis: dict, now: float) -> None:
        while len(spis) > MAX_SPIS:
            oldest = min(spis.values(), key=lambda e: e.last_seen)
            self._forget(oldest, "replaced", now)

    def _forget(self, entry: EspSpi, reason: str, now: float) -> None:
        self.ctx.withdraw(entry)
        assoc = entry.assoc
        if entry.outbound:
            del assoc.esp_out[entry.spi]
            self.esp_out.pop((assoc.inside_ip, assoc.remote_ip, entry.spi), None)
        else:
            del assoc.esp_in[entry.spi]
            self.esp_in.pop((assoc.remote_ip, entry.spi), None)
        self.ctx.event("esp_down", {**assoc.summary(), "spi": f"{entry.spi:08x}",
                                    "direction": "out" if entry.outbound else "in", "reason": reason}, now)

    # -- associations ---------------------------------------------------------------------------

    def _association(self, inside: int, remote: int, inside_is_client: bool, now: float) -> Association:
        assoc = self.associations.get((inside, remote))
        if assoc is None:
            assoc = Association(self.ctx.new_id(), inside, remote, inside_is_client, self.ctx.wan_ip, now)
            self.associations[(inside, remote)] = assoc
            self.by_gateway.setdefault(remote, []).append(assoc)
            self.opened(assoc, now)
        return assoc

    def _end(self, assoc: Association, reason: str, now: float) -> None:
        if assoc.closed:
            return
        assoc.closed = True
        for entry in [*assoc.esp_out.values(), *assoc.esp_in.values()]:
            self._forget(entry, reason, now)
        for spi, outbound in [(s, True) for s in assoc.natt_out] + [(s, False) for s in assoc.natt_in]:
            self.ctx.event("esp_down", {**assoc.summary(), "spi": f"{spi:08x}",
                                        "direction": "out" if outbound else "in", "natt": True, "reason": reason}, now)
        for sa in assoc.ike_sas.values():
            if sa.up:
                self.ctx.event("ike_down", {**assoc.summary(), "ike_spi_i": sa.spi_i.hex(),
                                            "ike_spi_r": sa.spi_r.hex(), "reason": reason}, now)
        self.ended(assoc, reason, now)
        del self.associations[(assoc.inside_ip, assoc.remote_ip)]
        self._leave_gateway(assoc)

    def _leave_gateway(self, assoc: Association) -> None:
        peers = self.by_gateway[assoc.remote_ip]
        peers.remove(assoc)
        if not peers:
            del self.by_gateway[assoc.remote_ip]

    # -- time, switch and views -------------------------------------------------------------------

    def expire(self, now: float) -> None:
        limit = now - self.ctx.timeouts.esp
        for entry in [e for e in (*self.esp_out.values(), *self.esp_in.values()) if e.last_seen <= limit]:
            self._forget(entry, "idle", now)
            assoc = entry.assoc
            if not assoc.esp_out and not assoc.esp_in and not assoc.sessions:
                self._end(assoc, "idle", now)

    def next_deadline(self) -> float | None:
        if not self.esp_out and not self.esp_in:
            return None
        timeout = self.ctx.timeouts.esp
        return min(e.last_seen for e in (*self.esp_out.values(), *self.esp_in.values())) + timeout

    def end_flow(self, flow: Association, reason: str, now: float) -> None:
        """The association and the IKE and NAT-T sessions that carry it."""
        for session in list(flow.sessions):
            self.ctx.close_session(session, reason)
        self._end(flow, reason, now)

    def tables(self) -> dict:
        return {**super().tables(), "associations": self.associations, "by_gateway": self.by_gateway,
                "esp_out": self.esp_out, "esp_in": self.esp_in}

    # -- the state file: associations are the helper's records; an IKE session names its association ---

    def flow_records(self) -> list[dict]:
        return [{**flow_record(a), "inside_is_client": a.inside_is_client,
                 "ike_sas": [[sa.spi_i, sa.spi_r, sa.up] for sa in a.ike_sas.values()],
                 "esp_out": [[e.spi, e.last_seen] for e in a.esp_out.values()],
                 "esp_in": [[e.spi, e.last_seen] for e in a.esp_in.values()],
                 "natt_out": list(a.natt_out), "natt_in": list(a.natt_in), "awaiting": a.awaiting,
                 "ambiguous": a.ambiguous, "last_out": a.last_out}
                for a in self.associations.values()]

    def restore_flows(self, records: list, restore: Restore) -> None:
        restore.each(self.flow_kind, records, lambda r: self._restore_association(r, restore))

    def _restore_association(self, r: Record, restore: Restore) -> Association:
        inside, remote = restore.inside(r, "inside_ip"), restore.remote(r, "remote_ip")
        if (inside, remote) in self.associations:
            raise BadRecord(f"{ip_str(inside)} and {ip_str(remote)} have two associations")
        ike_sas = [IkeSa.restored(entry) for entry in r.items("ike_sas", most=MAX_SPIS)]
        esp_out = [spi_entry(entry, restore) for entry in r.items("esp_out", most=MAX_SPIS)]
        esp_in = [spi_entry(entry, restore) for entry in r.items("esp_in", most=MAX_SPIS)]
        if any((remote, spi) in self.esp_in for spi, _ in esp_in):
            raise BadRecord(f"an inbound SPI from {ip_str(remote)} is another association's")
        natt = [[spi_value(v) for v in r.items(key, most=MAX_NATT_SPIS)] for key in ("natt_out", "natt_in")]
        created, last_seen = restore.times(r)
        last_out = restore.seen(r, "last_out", 0.0)
        restore.take_flow(inside)
        assoc = Association(restore.claim(r), inside, remote, r.flag("inside_is_client", True), self.ctx.wan_ip,
                            created)
        assoc.last_seen, assoc.last_out = last_seen, last_out
        assoc.awaiting, assoc.ambiguous = r.flag("awaiting"), r.flag("ambiguous")
        assoc.ike_sas = {sa.spi_i: sa for sa in ike_sas}
        assoc.natt_out, assoc.natt_in = natt
        restore_counters(assoc, r)
        for spi, seen in esp_out:
            self.esp_out[(inside, remote, spi)] = assoc.esp_out[spi] = EspSpi(assoc, spi, True, seen)
        for spi, seen in esp_in:
            self.esp_in[(remote, spi)] = assoc.esp_in[spi] = EspSpi(assoc, spi, False, seen)
        self.associations[(inside, remote)] = restore.flows[assoc.id] = assoc
        self.adopt(assoc)
        self.by_gateway.setdefault(remote, []).append(assoc)
        return assoc

    def session_record(self, session) -> dict | None:
        state = session.helper_state
        if state is None:
            return None
        return {"association": state.assoc.id, "natt": state.natt, "last_out": state.last_out,
                "spi_out": state.spi_out, "spi_in": state.spi_in}

    def restore_session(self, session, record: Record | None, restore: Restore) -> None:
        """An IKE or NAT-T session and its association; without one (left out), it finds one on its next packet."""
        if record is None:
            return
        assoc = restore.flows.get(record.integer("association", 1))
        if not isinstance(assoc, Association) or (assoc.inside_ip, assoc.remote_ip) != (session.inside_ip,
                                                                                          session.remote_ip):
            return
        state = IkeSession(assoc, record.flag("natt", NATT_PORT in (session.inside_port, session.remote_port)))
        state.last_out = restore.seen(record, "last_out", 0.0)
        state.spi_out = record.integer("spi_out", 0, 0xFFFFFFFF, default=0)
        state.spi_in = record.integer("spi_in", 0, 0xFFFFFFFF, default=0)
        session.helper_state = state
        assoc.sessions.append(session)

    def restore_done(self, restore: Restore) -> None:
        """An association lives while it has IKE or NAT-T sessions or raw-ESP SPIs: one with none goes."""
        for assoc in [a for a in self.associations.values() if not (a.sessions or a.esp_out or a.esp_in)]:
            assoc.closed = True
            del self.associations[(assoc.inside_ip, assoc.remote_ip)]
            self.live.pop(assoc.id, None)
            self._leave_gateway(assoc)
            restore.undo(self.flow_kind, "no IKE session or ESP SPI of it was restored")


