"""Captured frames, decoded for the details view: impacket for Ethernet, IPv4, TCP, UDP and ICMP, and
a line of our own for the VPN header inside (impacket stops at GRE, ESP, IKE and L2TP)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from impacket import ImpactDecoder, ImpactPacket

GRE, ESP = 47, 50
IKE_PORT, NATT_PORT, L2TP_PORT = 500, 4500, 1701


@dataclass(frozen=True, slots=True)
class Decoded:
    summary: str
    """One line: addresses, ports, and the VPN header's fields."""
    layers: str
    """impacket's own rendering of the frame (headers and a hex dump of the payload)."""


def decode(frame: bytes) -> Decoded:
    if len(frame) < 14:
        return Decoded(f"{len(frame)} bytes: shorter than an Ethernet header", frame.hex(" "))
    try:
        eth = ImpactDecoder.EthDecoder().decode(frame)
    except Exception as exc:            # impacket raises many kinds on a truncated frame
        return Decoded(f"{len(frame)} bytes, not decoded ({type(exc).__name__})", frame[:64].hex(" "))
    ip = eth.child()
    if not isinstance(ip, ImpactPacket.IP):
        return Decoded(f"ethertype 0x{eth.get_ether_type():04x}, {len(frame)} bytes", str(eth))
    text = f"{ip.get_ip_src()} > {ip.get_ip_dst()}"
    inner = ip.child()
    if isinstance(inner, ImpactPacket.TCP):
        flags = "".join(c for c, bit in zip("FSRPAU", range(6)) if inner.get_th_flags() & (1 << bit))
        text += f" TCP {inner.get_th_sport()} > {inner.get_th_dport()} [{flags}] seq {inner.get_th_seq()}"
    elif isinstance(inner, ImpactPacket.UDP):
        sport, dport = inner.get_uh_sport(), inner.get_uh_dport()
        text += f" UDP {sport} > {dport}"
        payload = _payload(inner)
        text += _udp_vpn(sport, dport, payload)
    elif isinstance(inner, ImpactPacket.ICMP):
        text += f" ICMP type {inner.get_icmp_type()} code {inner.get_icmp_code()}"
    elif ip.get_ip_p() == GRE:
        text += " GRE " + gre_summary(_payload(ip))
    elif ip.get_ip_p() == ESP:
        text += " " + esp_summary(_payload(ip))
    else:
        text += f" proto {ip.get_ip_p()}"
    return Decoded(f"{text}  len {len(frame)}", str(eth))


def _payload(layer) -> bytes:
    child = layer.child()
    return child.get_packet() if child is not None else b""


def gre_summary(data: bytes) -> str:
    """Enhanced GRE (RFC 2637 §4.1): version 1, protocol 0x880B, payload length, Call ID, seq and ack."""
    if len(data) < 8:
        return f"truncated ({len(data)} bytes)"
    flags, version_byte, ptype, length, call_id = struct.unpack_from("!BBHHH", data)
    version = version_byte & 0x07
    text = f"v{version} proto 0x{ptype:04x} call {call_id} len {length}"
    offset = 8
    if flags & 0x10 and len(data) >= offset + 4:         # S: sequence number present
        text += f" seq {struct.unpack_from('!I', data, offset)[0]}"
        offset += 4
    if version_byte & 0x80 and len(data) >= offset + 4:  # A: acknowledgment number present
        text += f" ack {struct.unpack_from('!I', data, offset)[0]}"
    return text


def esp_summary(data: bytes) -> str:
    """ESP (RFC 4303 §2): SPI and sequence number."""
    if len(data) < 8:
        return f"ESP truncated ({len(data)} bytes)"
    spi, seq = struct.unpack_from("!II", data)
    return f"ESP spi {spi:08x} seq {seq}"


def ike_summary(data: bytes) -> str:
    """IKE header (RFC 7296 §3.1): SPIs, exchange type, flags, message ID."""
    if len(data) < 28:
        return f"IKE truncated ({len(data)} bytes)"
    spi_i, spi_r = data[:8].hex(), data[8:16].hex()
    exchange, flags = data[18], data[19]
    message_id = struct.unpack_from("!I", data, 20)[0]
    role = "initiator" if flags & 0x08 else "responder"
    return f"IKE spi_i {spi_i} spi_r {spi_r} exchange {exchange} {role} msgid {message_id}"


def l2tp_summary(data: bytes) -> str:
    """L2TP header (RFC 2661 §3.1): control or data, Tunnel ID, Session ID."""
    if len(data) < 6:
        return f"L2TP truncated ({len(data)} bytes)"
    bits = struct.unpack_from("!H", data)[0]
    offset = 2 + (2 if bits & 0x4000 else 0)                # L: length present
    if len(data) < offset + 4:
        return "L2TP truncated"
    tunnel_id, session_id = struct.unpack_from("!HH", data, offset)
    kind = "control" if bits & 0x8000 else "data"
    return f"L2TP {kind} tunnel {tunnel_id} session {session_id}"


def _udp_vpn(sport: int, dport: int, payload: bytes) -> str:
    ports = (sport, dport)
    if L2TP_PORT in ports:
        return " " + l2tp_summary(payload)
    if IKE_PORT in ports:
        return " " + ike_summary(payload)
    if NATT_PORT in ports:
        if payload == b"\xff":
            return " NAT-T keepalive"
        if payload[:4] == b"\0\0\0\0":                      # non-ESP marker (RFC 3948 §2.2)
            return " NAT-T " + ike_summary(payload[4:])
        return " NAT-T " + esp_summary(payload)
    return ""
