"""L2TP on the wire (RFC 2661 §3, §4): the header, the AVPs the helper reads, and in-place rewrites."""

from __future__ import annotations

from enum import IntEnum

from ..packet.checksum import rewrite_u16
from ..packet.frame import VNET_F_NEEDS_CSUM

UDP_HEADER = 8
T_BIT, L_BIT, S_BIT, O_BIT = 0x8000, 0x4000, 0x0800, 0x0200
VERSION = 2
AVP_MANDATORY, AVP_HIDDEN, AVP_LENGTH = 0x8000, 0x4000, 0x03FF
AVP_HEADER = 6


class Malformed(ValueError):
    """A message the helper cannot read; ``str()`` says what is wrong."""


class OtherVersion(ValueError):
    """Not L2TP version 2 (L2F, or L2TPv3): forwarded unparsed."""


class L2tpMessageType(IntEnum):
    """Control message types (RFC 2661 §3.2)."""
    SCCRQ = 1
    SCCRP = 2
    SCCCN = 3
    STOPCCN = 4
    HELLO = 6
    OCRQ = 7
    OCRP = 8
    OCCN = 9
    ICRQ = 10
    ICRP = 11
    ICCN = 12
    CDN = 14
    WEN = 15
    SLI = 16


class L2tpAvpType(IntEnum):
    """The attribute types the helper reads (RFC 2661 §4.4)."""
    MESSAGE_TYPE = 0
    RESULT_CODE = 1
    HOST_NAME = 7
    ASSIGNED_TUNNEL_ID = 9
    ASSIGNED_SESSION_ID = 14


M = L2tpMessageType
REQUESTS = frozenset({M.ICRQ, M.OCRQ})
REPLIES = frozenset({M.ICRP, M.OCRP})
CONNECTED = frozenset({M.ICCN, M.OCCN})


class Message:
    """The AVPs of one control message that the helper reads: values, and where the Assigned Tunnel ID is."""
    __slots__ = ("type", "tunnel_id", "tunnel_id_at", "tunnel_id_hidden", "session_id", "host_name")

    def __init__(self) -> None:
        self.type = 0
        self.tunnel_id: int | None = None
        self.tunnel_id_at = 0
        self.tunnel_id_hidden = False
        self.session_id: int | None = None
        self.host_name: str | None = None


def parse_header(frame, at: int):
    """(control?, offset of the Tunnel ID, first AVP, end of message) of the L2TP header at ``at`` (RFC 2661 §3.1):
    ``Malformed`` or ``OtherVersion`` if it cannot be read."""
    size = len(frame) - at
    if size < 6:
        raise Malformed(f"{size}-byte L2TP header")
    flags = frame[at] << 8 | frame[at + 1]
    if flags & 0x000F != VERSION:
        raise OtherVersion(flags & 0x000F)
    i, end = at + 2, at + size
    if flags & L_BIT:
        length = frame[i] << 8 | frame[i + 1]
        if not 8 <= length <= size:
            raise Malformed(f"L2TP length {length} in a {size}-byte datagram")
        end = at + length
        i += 2
    tunnel_at = i
    i += 4 + (4 if flags & S_BIT else 0)
    if flags & O_BIT:
        if i + 2 > end:
            raise Malformed("L2TP offset size beyond the message")
        i += 2 + (frame[i] << 8 | frame[i + 1])
    control = bool(flags & T_BIT)
    if i > end or tunnel_at + 4 > end:
        raise Malformed("L2TP header longer than its message")
    if control and (flags & (L_BIT | S_BIT)) != (L_BIT | S_BIT):
        raise Malformed("L2TP control message without Length and Sequence")
    return control, tunnel_at, i, end


def data_tunnel_id(frame, at: int) -> int | None:
    """The Tunnel ID of a version 2 data message whose header starts at ``at`` (RFC 2661 §3.1); None for a
    control message, another version or too few bytes.  The rest of the header is not checked here."""
    if len(frame) < at + 6:
        return None
    flags = frame[at] << 8 | frame[at + 1]
    if flags & T_BIT or flags & 0x000F != VERSION:
        return None
    tunnel_at = at + (4 if flags & L_BIT else 2)
    return frame[tunnel_at] << 8 | frame[tunnel_at + 1] if len(frame) >= tunnel_at + 2 else None


def parse_avps(frame, i: int, end: int) -> Message:
    """The AVPs the helper reads of the control message from ``i`` to ``end`` (RFC 2661 §4.1); ``Malformed``."""
    msg = Message()
    first = True
    while i < end:
        if i + AVP_HEADER > end:
            raise Malformed("truncated AVP header")
        bits = frame[i] << 8 | frame[i + 1]
        length = bits & AVP_LENGTH
        if length < AVP_HEADER or i + length > end:
            raise Malformed(f"AVP of length {length} at byte {i - end}")
        vendor, kind = frame[i + 2] << 8 | frame[i + 3], frame[i + 4] << 8 | frame[i + 5]
        hidden, value = bool(bits & AVP_HIDDEN), i + AVP_HEADER
        if first:
            if vendor or kind != L2tpAvpType.MESSAGE_TYPE or length != 8 or hidden:
                raise Malformed("control message without a Message Type AVP first")
            msg.type = frame[value] << 8 | frame[value + 1]
            first = False
        elif vendor == 0 and kind == L2tpAvpType.ASSIGNED_TUNNEL_ID and hidden:
            msg.tunnel_id_hidden = True          # obfuscated (§4.3): its value is never read
        elif vendor == 0 and kind == L2tpAvpType.ASSIGNED_TUNNEL_ID and length == 8:
            msg.tunnel_id, msg.tunnel_id_at = frame[value] << 8 | frame[value + 1], value
        elif vendor == 0 and kind == L2tpAvpType.ASSIGNED_SESSION_ID and length == 8 and not hidden:
            msg.session_id = frame[value] << 8 | frame[value + 1]
        elif vendor == 0 and kind == L2tpAvpType.HOST_NAME and not hidden:
            msg.host_name = bytes(frame[value:i + length]).decode("utf-8", "replace")
        i += length
    return msg


def write_u16(frame: bytearray, l4: int, at: int, value: int) -> None:
    """Rewrite a 16-bit field of the UDP payload in place; the UDP checksum follows (zero stays zero)."""
    if frame[0] & VNET_F_NEEDS_CSUM:      # the kernel sums the payload later
        frame[at], frame[at + 1] = value >> 8, value & 0xFF
    else:
        rewrite_u16(frame, l4, at, value, l4 + 6, zero_is_none=True)
