"""A restart that loses no session: the router's tables as bytes for a state file, and back.

What is kept: the NAT's mappings and sessions (with their TCP states, counters and deadlines), every helper's
tables (PPTP calls, L2TP tunnels and sessions, IPsec associations and learned SPIs), the ARP caches, the id
counter and who holds a single-passthrough VPN.  Not kept: fragments waiting for their first piece, events not
yet published, captures (their clients are gone).

Times stay on the router's own clock: the runtime starts its clock again where the saved one stood, plus the
wall-clock time the router was down, so every timeout continues and the downtime counts as idle time.

The file is ``MAGIC``, the format's version (4 bytes), the SHA-256 of the body, then the body: a pickle that
may name only the router's own classes and a few harmless standard ones (``_Unpickler.find_class``).  A file
that is not one, is cut short, fails its checksum, has another version, or was written for other addresses is
refused with a ``StateError`` that says why in one line.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import struct
from dataclasses import dataclass

from .helpers.base import HelperContext

MAGIC = b"VPNROUTER-STATE\n"
VERSION = 1
_HEADER = struct.Struct("!I32s")
SAFE_GLOBALS = {
    "builtins": {"set", "frozenset", "bytearray", "slice", "range", "complex"},
    "collections": {"deque", "OrderedDict", "defaultdict"},
    "itertools": {"count"},
    "random": {"Random"},
    "copyreg": {"_reconstructor"},
    "enum": {"Enum"},
    "functools": {"partial"},
}
"""Standard classes a state file may name, besides ``router.*``'s."""


class StateError(Exception):
    """A state file that cannot be used; the message says why, in one line."""


@dataclass
class Saved:
    now: float
    """The router's clock when the state was written."""
    wall: float
    """The wall clock then (``time.time()``)."""
    tables: dict

    def resume_at(self, wall_now: float) -> float:
        """The router's time to go on from: where it stopped, plus how long it was down (never less than 0)."""
        return self.now + max(0.0, wall_now - self.wall)


def identity(config) -> dict:
    """What the saved sessions depend on: the ports' TAPs, addresses and MACs."""
    return {name: (port.tap, port.address, port.prefix_len, port.mac) for name, port in
            (("lan", config.lan), ("wan", config.wan))}


def dump(config, tables: dict, now: float, wall: float) -> bytes:
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(
        {"identity": identity(config), "now": now, "wall": wall, "tables": tables})
    body = buffer.getvalue()
    return MAGIC + _HEADER.pack(VERSION, hashlib.sha256(body).digest()) + body


def load(data: bytes, config) -> Saved:
    if not data.startswith(MAGIC):
        raise StateError("not a vpnrouter state file")
    if len(data) < len(MAGIC) + _HEADER.size:
        raise StateError("cut short")
    version, digest = _HEADER.unpack_from(data, len(MAGIC))
    if version != VERSION:
        raise StateError(f"format version {version}, this router reads version {VERSION}")
    body = data[len(MAGIC) + _HEADER.size:]
    if hashlib.sha256(body).digest() != digest:
        raise StateError("damaged or cut short (its checksum does not match)")
    try:
        saved = _Unpickler(io.BytesIO(body)).load()
    except Exception as exc:     # a file from another release of the code, say: refused, never fatal
        raise StateError(f"unreadable: {type(exc).__name__}: {exc}") from None
    if saved.get("identity") != identity(config):
        raise StateError("written for other ports, addresses or MACs than the configuration's")
    return Saved(saved["now"], saved["wall"], saved["tables"])


class _Pickler(pickle.Pickler):
    """Leaves out what belongs to this process: helpers' bindings to the router, and live captures."""

    def persistent_id(self, obj):
        if isinstance(obj, HelperContext) or type(obj).__module__.startswith("router.control"):    # captures
            return "gone"
        return None


class _Unpickler(pickle.Unpickler):
    def persistent_load(self, pid):
        return None

    def find_class(self, module: str, name: str):
        if module == "router" or module.startswith("router.") or name in SAFE_GLOBALS.get(module, ()):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a state file")
