"""What the IPsec helper keeps of each (client, gateway) pair, and the wire formats it reads: the IKE header
(RFC 7296 §3.1, RFC 2408 §3.1) and ESP's SPI (RFC 4303 §2.1)."""

from __future__ import annotations

import struct
from enum import IntEnum

from ..packet.frame import ip_str
from .base import Flow
from .records import BadRecord, Record, Restore

IKE_PORT = 500
NATT_PORT = 4500
IPSEC_PORTS = (IKE_PORT, NATT_PORT)
UDP_HEADER = 8
IKE_HEADER_LEN = 28
"""SPIi 8, SPIr 8, next payload, version, exchange type, flags, message ID 4, length 4 (RFC 7296 §3.1)."""
IKE_LENGTH_AT = 24
NO_SPI = bytes(8)
NON_ESP_MARKER = bytes(4)
KEEPALIVE = 0xFF
U32 = struct.Struct("!I")
MAX_SPIS = 32
"""Raw-ESP SPIs kept per association and direction; the least recently used goes first."""
MAX_NATT_SPIS = 8
"""ESP-in-UDP SPIs remembered per association and direction, for display."""


class IkeExchangeType(IntEnum):
    """Exchange types (RFC 2408 §3.1 for IKEv1, RFC 7296 §3.1 for IKEv2)."""
    IDENTITY_PROTECTION = 2
    AGGRESSIVE = 4
    INFORMATIONAL_V1 = 5
    QUICK_MODE = 32
    IKE_SA_INIT = 34
    IKE_AUTH = 35
    CREATE_CHILD_SA = 36
    INFORMATIONAL = 37


class EspSpi:
    """One learned raw-ESP SPI: its association, direction and last use."""
    __slots__ = ("assoc", "spi", "outbound", "last_seen")

    def __init__(self, assoc: "Association", spi: int, outbound: bool, now: float):
        self.assoc = assoc
        self.spi = spi
        self.outbound = outbound
        self.last_seen = now

    def used(self, frames: int, octets: int, last: float) -> None:
        """Datagrams the fast path forwarded with this SPI: as ``flow_out`` and ``flow_in`` note them."""
        self.last_seen = last
        if self.outbound:
            self.assoc.last_out = last


class IkeSa:
    __slots__ = ("spi_i", "spi_r", "up")

    def __init__(self, spi_i: bytes):
        self.spi_i = spi_i
        self.spi_r = NO_SPI
        self.up = False

    @classmethod
    def restored(cls, entry) -> "IkeSa":
        """One of ``Association.ike_sas`` as a state file holds it: [initiator SPI, responder SPI, up]."""
        if not (isinstance(entry, list) and len(entry) == 3 and all(isinstance(v, bytes) and len(v) == 8
                                                                    for v in entry[:2])
                and entry[0] != NO_SPI and isinstance(entry[2], bool)):
            raise BadRecord("an IKE SA is not [8-byte initiator SPI, 8-byte responder SPI, up]")
        sa = cls(entry[0])
        sa.spi_r, sa.up = entry[1], entry[2]
        return sa


class Association(Flow):
    """A (client, gateway) pair: its IKE SAs, ESP SPIs, NAT sessions, and raw-ESP counters."""

    __slots__ = ("inside_is_client", "ike_sas", "esp_out", "esp_in", "natt_out", "natt_in", "sessions",
                 "awaiting", "ambiguous", "last_out")
    proto = "esp"
    vpn = "ipsec"

    def __init__(self, aid: int, inside_ip: int, remote_ip: int, inside_is_client: bool, wan_ip: int, now: float):
        super().__init__(aid, inside_ip, remote_ip, wan_ip, now)
        self.inside_is_client = inside_is_client
        self.ike_sas: dict[bytes, IkeSa] = {}
        """Initiator SPI -> IKE SA."""
        self.esp_out: dict[int, EspSpi] = {}
        self.esp_in: dict[int, EspSpi] = {}
        self.natt_out: list[int] = []
        self.natt_in: list[int] = []
        self.sessions: list = []
        """The NAT sessions (UDP 500/4500) carrying its IKE and NAT-T traffic."""
        self.awaiting = False
        """An outbound SPI appeared and no inbound SPI was learned since."""
        self.ambiguous = False
        self.last_out = 0.0
        """When raw ESP last left towards the gateway."""

    @property
    def client(self) -> int:
        return self.inside_ip if self.inside_is_client else self.remote_ip

    @property
    def gateway(self) -> int:
        return self.remote_ip if self.inside_is_client else self.inside_ip

    def natt(self) -> bool:
        return bool(self.natt_out or self.natt_in) or any(NATT_PORT in (s.inside_port, s.remote_port)
                                                          for s in self.sessions)

    def state(self) -> str:
        outbound, inbound = self.esp_out or self.natt_out, self.esp_in or self.natt_in
        if outbound and inbound:
            return "established"
        return "half_open" if outbound or inbound else "negotiating"

    def totals(self) -> tuple[int, int, int, int]:
        packets_in, packets_out, bytes_in, bytes_out = self.packets_in, self.packets_out, self.bytes_in, self.bytes_out
        for s in self.sessions:
            packets_in += s.packets_in
            packets_out += s.packets_out
            bytes_in += s.bytes_in
            bytes_out += s.bytes_out
        return packets_in, packets_out, bytes_in, bytes_out

    def details(self) -> dict:
        sas = list(self.ike_sas.values())
        return {
            "client": ip_str(self.client), "gateway": ip_str(self.gateway),
            "ike_spi_i": one_or_list([sa.spi_i.hex() for sa in sas]),
            "ike_spi_r": one_or_list([sa.spi_r.hex() for sa in sas if sa.spi_r != NO_SPI]),
            "esp_spi_out": one_or_list([f"{spi:08x}" for spi in [*self.esp_out, *self.natt_out]]),
            "esp_spi_in": one_or_list([f"{spi:08x}" for spi in [*self.esp_in, *self.natt_in]]),
            "natt": self.natt(),
            "ports": [{"inside": s.inside_port, "outside": s.outside_port, "remote": s.remote_port}
                      for s in self.sessions],
            "ambiguous": self.ambiguous,
        }

    def tables(self) -> dict:
        return {"esp_out": (self.esp_out, MAX_SPIS), "esp_in": (self.esp_in, MAX_SPIS),
                "natt_out": (self.natt_out, MAX_NATT_SPIS), "natt_in": (self.natt_in, MAX_NATT_SPIS)}

    def summary(self) -> dict:
        return {"id": self.id, "client": ip_str(self.client), "gateway": ip_str(self.gateway)}


class IkeSession:
    """What the helper keeps on a NAT session of UDP 500 or 4500 (``session.helper_state``)."""
    __slots__ = ("assoc", "natt", "last_out", "spi_out", "spi_in")

    def __init__(self, assoc: Association, natt: bool):
        self.assoc = assoc
        self.natt = natt
        self.last_out = 0.0
        """When the inside host last sent IKE on this session."""
        self.spi_out = self.spi_in = 0
        """The ESP-in-UDP SPI last seen each way (the per-packet check is one comparison)."""


def spi_value(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 0xFFFFFFFF:
        raise BadRecord("an SPI is not a number from 1 to 2**32 - 1")
    return value


def spi_entry(entry, restore: Restore) -> tuple[int, float]:
    """[SPI, last seen] of a learned raw-ESP SPI."""
    if not isinstance(entry, list) or len(entry) != 2:
        raise BadRecord("a raw-ESP SPI is not [SPI, last seen]")
    return spi_value(entry[0]), restore.seen(Record({"last_seen": entry[1]}), "last_seen")


def ike_header(frame, at: int, size: int) -> tuple[bytes, bytes] | None:
    """(initiator SPI, responder SPI) of a well-formed IKE or ISAKMP header, else None."""
    if size < IKE_HEADER_LEN:
        return None
    length = U32.unpack_from(frame, at + IKE_LENGTH_AT)[0]
    spi_i = bytes(frame[at:at + 8])
    if spi_i == NO_SPI or frame[at + 17] >> 4 not in (1, 2) or not IKE_HEADER_LEN <= length <= size:
        return None
    return spi_i, bytes(frame[at + 8:at + 16])


def one_or_list(values: list):
    """A string where there is one, a list where rekeys made several, None where there is none."""
    if not values:
        return None
    return values[0] if len(values) == 1 else values
