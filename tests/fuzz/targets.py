"""The fuzz targets by name, the regression corpus, and the bugs it still holds open.

Every target takes one byte string (``run(target, data)``), so hypothesis,
atheris and the corpus share inputs: a failing input is kept as
``tests/data/fuzz/<target>/crash-<sha1>`` (``save``) and replayed by
``test_fuzz.test_corpus_replays`` for good.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import msgpack

from router.control import protocol

from . import control, program

CORPUS = Path(__file__).parents[1] / "data" / "fuzz"
TARGETS = (*program.FRAME_TARGETS, "control")
"""Frame targets (one per protocol, ``frame``, ``junk``, ``wan_junk``) and the control socket's reader."""
CONTROL_METHODS = (*protocol.METHODS, "no_such_method")

def control_stream(data: bytes) -> bytes:
    """A control target's input as the bytes a client sends: after a first byte of 0 the rest as it is; else
    one request whose method the second byte picks and whose params the rest holds (as MessagePack if it
    reads as such, else as one binary param)."""
    rd = program.Reader(data)
    mode = rd.byte() % 3
    if mode == 0:
        return data[1:]
    method = CONTROL_METHODS[rd.byte() % len(CONTROL_METHODS)]
    rest = rd.take(rd.left)
    try:
        params = msgpack.unpackb(rest, raw=False, strict_map_key=False)
    except Exception:       # noqa: BLE001 - not MessagePack: sent as bytes
        params = [rest]
    if mode == 1 and not isinstance(params, list):
        params = [params]
    return msgpack.packb([0, 7, method, params])


def run(target: str, data: bytes) -> None:
    """One input through one target; raises on a crash or a broken invariant."""
    if target == "control":
        control.check(control_stream(data))
    else:
        program.run(target, data)


def save(target: str, data: bytes) -> Path:
    """Keep a failing input in the corpus as ``crash-<sha1>``."""
    path = CORPUS / target / f"crash-{hashlib.sha1(data).hexdigest()}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def cases() -> list[tuple[str, Path]]:
    """(target, file) for every corpus input."""
    return [(path.parent.name, path) for path in sorted(CORPUS.glob("*/*"))
            if path.is_file() and path.parent.name in TARGETS]
