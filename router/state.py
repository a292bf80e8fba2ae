"""A restart that keeps what it should: the router's tables as records in a state file, and back.

What is kept: the NAT's mappings and sessions (TCP states, counters, deadlines), each helper's flows (its
calls, tunnels or associations, as it writes them) and the id counter; who holds a
single-passthrough VPN follows from them.  Not kept: neighbours (a restarted router resolves them again, so a
host whose MAC changed meanwhile is reached), fragments waiting for their first piece, events not yet
published, captures (their clients are gone).

Times stay on the router's own clock: the runtime starts its clock again where the saved one stood, plus the
wall-clock time the router was down, so every timeout continues and the downtime counts as idle time.

The file is ``MAGIC``, the format's version (4 bytes), the SHA-256 of the body, then the body: one MessagePack
map of plain values (``FORMAT``, below), which no byte of can name a class or a function.  The records in it are
written and read by their owners (``Router.state_records``, ``Router.restore``, ``helpers/records.py``): a
record that makes no sense is left out and counted, never fatal.  A file that is not one, is cut short, fails
its checksum, has another version, or was written for other ports or addresses is refused with a
``StateError`` that says why in one line.
"""

from __future__ import annotations

import hashlib
import platform
import struct
from dataclasses import dataclass

import msgpack

MAGIC = b"VPNROUTER-STATE\n"
VERSION = 2
"""The format's version. 1 was a pickle (until December 2026), read no more; 2 is MessagePack records."""
_HEADER = struct.Struct("!I32s")
FORMAT = """\
{"identity": {"lan": [tap, address, prefix length, mac], "wan": [...]},
 "clock": the router's clock when written, "written": the wall clock then (time.time()),
 "writer": {"vpnrouter": version, "python": version},
 "records": {"next_id": int,
             "mappings": [{"proto", "inside_ip", "inside_port", "outside_port", "destination": [],
                           "filtering", "static", "shared",
                           "sessions": [{"id", "remote_ip", "remote_port", "created", "last_seen", "packets_in", ...,
                                         "tcp_state", "fixed_deadline", "vpn", "holds", "helper": {...}}]}],
             "flows": {<helper name>: [that helper's flow records], ...}}}
Addresses are 32-bit numbers, times seconds; each helper's records are described in its module."""


class StateError(Exception):
    """A state file that cannot be used; the message says why, in one line."""


@dataclass
class Saved:
    clock: float
    """The router's clock when the state was written."""
    written: float
    """The wall clock then (``time.time()``)."""
    identity: dict
    writer: dict
    records: dict
    """What ``Router.restore`` takes up."""

    def resume_at(self, wall_now: float) -> float:
        """The router's time to go on from: where it stopped, plus how long it was down (never less than 0)."""
        return self.clock + max(0.0, wall_now - self.written)


def identity(config) -> dict:
    """What the saved sessions depend on: the ports' TAPs, addresses and MACs."""
    return {name: [port.tap, port.address, port.prefix_len, port.mac] for name, port in
            (("lan", config.lan), ("wan", config.wan))}


def dump(config, records: dict, clock: float, written: float, version: str = "") -> bytes:
    body = msgpack.packb({"identity": identity(config), "clock": clock, "written": written,
                          "writer": {"vpnrouter": version, "python": platform.python_version()},
                          "records": records}, use_bin_type=True)
    return MAGIC + _HEADER.pack(VERSION, hashlib.sha256(body).digest()) + body


def read(data: bytes) -> Saved:
    """A state file's contents, whatever configuration it was written for."""
    if not data.startswith(MAGIC):
        raise StateError("not a vpnrouter state file")
    if len(data) < len(MAGIC) + _HEADER.size:
        raise StateError("cut short")
    version, digest = _HEADER.unpack_from(data, len(MAGIC))
    if version > VERSION:
        raise StateError(f"format version {version}, written by a newer vpnrouter (this one reads version "
                         f"{VERSION})")
    if version != VERSION:
        raise StateError(f"format version {version}, from an older vpnrouter, is no longer read (this one reads "
                         f"version {VERSION}); the tables start empty")
    body = data[len(MAGIC) + _HEADER.size:]
    if hashlib.sha256(body).digest() != digest:
        raise StateError("damaged or cut short (its checksum does not match)")
    try:
        saved = msgpack.unpackb(body, raw=False, strict_map_key=False, ext_hook=_no_extensions)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise StateError(f"unreadable: {type(exc).__name__}: {exc}") from None
    try:
        return Saved(_number(saved["clock"]), _number(saved["written"]), dict(saved["identity"]),
                     dict(saved.get("writer") or {}), dict(saved["records"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise StateError(f"not the layout of a state file ({type(exc).__name__}: {exc})") from None


def load(data: bytes, config) -> Saved:
    """A state file's contents, if it was written for this configuration's ports and addresses."""
    saved = read(data)
    if saved.identity != identity(config):
        raise StateError("written for other ports, addresses or MACs than the configuration's")
    return saved


def _no_extensions(code: int, data: bytes):
    raise ValueError(f"MessagePack extension type {code} has no place in a state file")


def _number(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ValueError(f"{value!r} is not a time")
    return float(value)


KINDS = ("mapping", "session")
"""The NAT's kinds of record, told first; the helpers' flows follow by name."""


def summary(saved: Saved, tally, wall_now: float) -> dict:
    """What a restore took up and left out (``tally``: its ``Restore``), for ``ctl status`` (``state.restored``)."""
    counts = sorted(tally.counts.items(), key=lambda item: (KINDS.index(item[0]) if item[0] in KINDS else 2, item[0]))
    return {"written": saved.written, "age": round(max(0.0, wall_now - saved.written), 3),
            "writer": saved.writer, "counts": dict(counts),
            "dropped": [{"kind": kind, "reason": reason, "count": n} for (kind, reason), n in tally.dropped.items()]}


def describe(restored: dict) -> str:
    """A restore in one line: "written 12.3 s ago; restored 2 mappings, 3 sessions; left out 1 session (...)"."""
    text = f"written {restored['age']:.1f} s ago; restored {_counted(restored['counts'].items()) or 'nothing'}"
    dropped = restored["dropped"]
    if dropped:
        text += "; left out " + ", ".join(f"{_counted([(d['kind'], d['count'])])} ({d['reason']})"
                                          for d in dropped[:5])
        if len(dropped) > 5:
            text += f" and {sum(d['count'] for d in dropped[5:])} more"
    return text


def _counted(pairs) -> str:
    return ", ".join(f"{n} {kind}{'' if n == 1 else 's'}" for kind, n in pairs)
