"""PPTP's control messages on the wire (RFC 2637 §2): types, lengths, where Call IDs are, and a control stream
direction that frames them."""

from __future__ import annotations

import struct
from enum import IntEnum

from .records import BadRecord, Record
from .tcpstream import StreamDirection

MAGIC_COOKIE = 0x1A2B3C4D
CONTROL_MESSAGE = 1
HEADER = struct.Struct("!HHIH")
"""length, PPTP message type, magic cookie, control message type (RFC 2637 §2)."""
MAX_LENGTH = 4096


class PptpMessageType(IntEnum):
    """Control message types (RFC 2637 §2.1-§2.15)."""
    SCCRQ = 1
    SCCRP = 2
    STOP_CCRQ = 3
    STOP_CCRP = 4
    ECHO_RQ = 5
    ECHO_RP = 6
    OCRQ = 7
    OCRP = 8
    ICRQ = 9
    ICRP = 10
    ICCN = 11
    CCRQ = 12
    CDN = 13
    WEN = 14
    SLI = 15


T = PptpMessageType
MESSAGE_LENGTH = {T.SCCRQ: 156, T.SCCRP: 156, T.STOP_CCRQ: 16, T.STOP_CCRP: 16, T.ECHO_RQ: 16, T.ECHO_RP: 20,
                  T.OCRQ: 168, T.OCRP: 32, T.ICRQ: 220, T.ICRP: 24, T.ICCN: 28, T.CCRQ: 16, T.CDN: 148,
                  T.WEN: 40, T.SLI: 24}
"""Length of each message, header included (RFC 2637 §2; the sizes Linux's helper checks)."""

OWN, PEER = "own", "peer"
CALL_ID_FIELDS = {T.OCRQ: ((12, OWN),), T.OCRP: ((12, OWN), (14, PEER)), T.ICRQ: ((12, OWN),),
                  T.ICRP: ((12, OWN), (14, PEER)), T.ICCN: ((12, PEER),), T.CCRQ: ((12, OWN),),
                  T.CDN: ((12, OWN),), T.WEN: ((12, PEER),), T.SLI: ((12, PEER),)}
"""Where each message carries a Call ID, and whose: the sender's own or its peer's."""
CREATES_CALL = frozenset({T.OCRQ, T.OCRP, T.ICRQ, T.ICRP})
RESULT_OK = 1   # OCRP "Connected", ICRP "Connect" (RFC 2637 §2.8, §2.10)


class Direction(StreamDirection):
    """A control stream direction plus the message being assembled."""
    __slots__ = ("message", "synced")

    def __init__(self) -> None:
        super().__init__()
        self.message = bytearray()
        """The original bytes of the current message so far."""
        self.synced = True


def direction_record(direction: Direction) -> dict:
    return {"next_seq": direction.next_seq, "rewrites": [[seq, data] for seq, data in direction.rewrites],
            "message": bytes(direction.message), "synced": direction.synced}


def restore_direction(direction: Direction, r: Record) -> None:
    """A control stream direction as ``direction_record`` wrote it: where it is, and the rewrites to replay."""
    direction.next_seq = r.optional_integer("next_seq", 0, 0xFFFFFFFF)
    for entry in r.items("rewrites", most=direction.rewrites.maxlen):
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], int)
                and 0 <= entry[0] <= 0xFFFFFFFF and isinstance(entry[1], bytes) and 0 < len(entry[1]) <= 2):
            raise BadRecord("a control stream rewrite is not [sequence number, 1 or 2 bytes]")
        direction.rewrites.append((entry[0], entry[1]))
    direction.message = bytearray(r.octets("message", most=MAX_LENGTH, default=b""))
    direction.synced = r.flag("synced", True)


def U16(data, at: int) -> int:  # noqa: N802 - reads like the struct format it stands for
    return data[at] << 8 | data[at + 1]
