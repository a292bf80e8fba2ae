"""``vpnrouter state show FILE``: what a state file holds, read as a restart would read it.

The records are taken up by a router that is built for the purpose and never
runs (no TAP, no socket): with ``--config``, the router of that
configuration; otherwise one with the default settings on the ports and
addresses the file names.  So what is shown as restored, and what as left
out with its reason, is what a restart would do.
"""

from __future__ import annotations

import json
import sys
import time

from . import config as config_mod
from . import state
from .dataplane.router import Router
from .helpers.registry import build_helpers
from .packet.frame import ip_str


def show(path: str, config_path: str | None, as_json: bool) -> int:
    try:
        with open(path, "rb") as f:
            data = f.read()
        saved = state.read(data)
        config = config_mod.load(config_path) if config_path else _config_of(saved.identity)
        if config_path:
            state.load(data, config)
    except OSError as exc:
        return _fail(f"cannot read {path}: {exc.strerror}")
    except (state.StateError, config_mod.ConfigError) as exc:
        return _fail(f"{path}: {exc}")
    router = Router(config, build_helpers(config))
    tally = router.restore(saved.records, saved.clock)
    restored = state.summary(saved, tally, time.time())
    sessions = [info.to_dict() for info in router.session_infos(saved.clock)]
    if as_json:
        print(json.dumps({"file": path, "version": state.VERSION, "identity": _identity(saved.identity),
                          "clock": saved.clock, **restored, "sessions": sessions,
                          "records": _plain(saved.records)}, indent=2))
        return 0
    from .cli import _print_table
    written = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(saved.written))
    writer = saved.writer
    print(f"state file  {path}")
    print(f"format      version {state.VERSION}, written {written} ({restored['age']:.0f} s ago) by vpnrouter "
          f"{writer.get('vpnrouter') or '?'} on Python {writer.get('python') or '?'}")
    for name, port in _identity(saved.identity).items():
        print(f"{name:<11} {port['address']}  mac {port['mac']}  tap {port['tap']}")
    print(f"restart     {state.describe(restored).split('; ', 1)[1]}"
          + ("" if config_path else "  (default settings; --config FILE for a router's own)"))
    print()
    _print_table(sessions)
    return 0


def _config_of(identity: dict) -> config_mod.Config:
    """The default configuration on the ports a state file names."""
    try:
        ports = [config_mod.PortConfig(tap=str(tap), address=int(address), prefix_len=int(length), mac=bytes(mac))
                 for tap, address, length, mac in (identity["lan"], identity["wan"])]
    except (KeyError, TypeError, ValueError) as exc:
        raise state.StateError(f"its ports are not readable ({type(exc).__name__}: {exc})") from None
    return config_mod.Config(lan=ports[0], wan=ports[1])


def _identity(identity: dict) -> dict:
    return {name: {"tap": tap, "address": f"{ip_str(address)}/{length}", "mac": bytes(mac).hex(":")}
            for name, (tap, address, length, mac) in ((n, identity[n]) for n in ("lan", "wan"))}


def _plain(value):
    """Records as JSON can hold them: bytes as hex."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _fail(message: str) -> int:
    print(f"vpnrouter state: {message}", file=sys.stderr)
    return 1
