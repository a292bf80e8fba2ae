"""The passthrough helpers by name: a new protocol is a module in ``router.helpers`` and a line here.

Whoever makes a ``Router`` (the runtime, the tests) builds the helpers from
the configuration with ``build_helpers`` and hands them in; the data plane
itself names no protocol (as aioquic registers its congestion controls).
"""

from __future__ import annotations

from .base import Helper
from .ipsec import IpsecHelper
from .l2tp import L2tpHelper
from .pptp import PptpHelper

REGISTRY: dict[str, type[Helper]] = {
    "pptp": PptpHelper,
    "l2tp": L2tpHelper,
    "ipsec": IpsecHelper,
}


def build_helpers(config) -> tuple[Helper, ...]:
    """One helper per registered protocol, whatever its switch says: a switch can turn on at run time."""
    return tuple(cls(config) for cls in REGISTRY.values())
