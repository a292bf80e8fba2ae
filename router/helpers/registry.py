"""The passthrough helpers by name: a new protocol is a module in ``router.helpers`` and a line here.

Everything that names the protocols reads them here, when it runs: the
config parser (``[passthrough]`` names, helper sections, timeouts, rules'
``vpn`` values), the router's switches (from the helpers it is handed), the
control socket's ``version`` answer (each helper's ``description``), ``ctl``'s
choices and help, and through the control socket the dashboard.  Whoever makes
a ``Router`` (the runtime, the tests) builds the helpers from the
configuration with ``build_helpers`` and hands them in; the data plane itself
names no protocol (as aioquic registers its congestion controls).

``register`` adds a protocol at run time (a test's toy protocol, a plug-in);
it checks the class as ``check`` does, so a clash is a clear error at once.
"""

from __future__ import annotations

import re

from .base import Helper
from .ipsec import IpsecHelper
from .l2tp import L2tpHelper
from .pptp import PptpHelper

REGISTRY: dict[str, type[Helper]] = {}
"""Name -> helper class, in the order the switches are shown."""

NAME = re.compile(r"[a-z][a-z0-9]{1,15}\Z")
RESERVED = frozenset({"any", "rule", "default_action"})
"""Words a helper may not be called: they mean something else where its name is used."""


class RegistryError(ValueError):
    """A helper class that cannot join the registry; ``str()`` says why."""


def register(cls: type[Helper]) -> type[Helper]:
    """Add a helper class (checked against the ones there); usable as a class decorator."""
    check(cls, REGISTRY.values())
    REGISTRY[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    REGISTRY.pop(name, None)


def helper_classes() -> tuple[type[Helper], ...]:
    return tuple(REGISTRY.values())


def names() -> tuple[str, ...]:
    """The registered protocols' names, in order: the passthrough switches."""
    return tuple(REGISTRY)


def build_helpers(config) -> tuple[Helper, ...]:
    """One helper per registered protocol, whatever its switch says: a switch can turn on at run time."""
    return tuple(cls(config) for cls in REGISTRY.values())


def descriptions() -> list[dict]:
    """Every registered protocol as a control client learns it."""
    return [cls.description() for cls in REGISTRY.values()]


def check(cls: type[Helper], others=()) -> None:
    """What a helper class must declare, and what it may not share with the others."""
    where = f"helper {cls.__name__}"
    if not isinstance(cls.name, str) or not NAME.match(cls.name) or cls.name in RESERVED:
        raise RegistryError(f"{where}: name {cls.name!r} is not a short lower-case word (or is reserved)")
    if not cls.title or cls.view is None or not cls.flow_proto:
        raise RegistryError(f"{where}: title, view and flow_proto must be declared")
    if not (isinstance(cls.key, str) and len(cls.key) == 1 and cls.key.isalpha() and cls.key.islower()):
        raise RegistryError(f"{where}: key {cls.key!r} is not one lower-case letter")
    keys = [option.key for option in cls.options]
    if len(set(keys)) != len(keys) or any(o.default not in o.choices for o in cls.options):
        raise RegistryError(f"{where}: options need distinct keys and a default among their choices")
    for other in others:
        if other is cls:
            continue
        for what, mine, theirs in (
                ("name", {cls.name}, {other.name}), ("key", {cls.key}, {other.key}),
                ("timeout", {t.key for t in cls.timeouts}, {t.key for t in other.timeouts}),
                ("counter", {*cls.counters, *(f"drop_{r}" for r in cls.drop_reasons)},
                 {*other.counters, *(f"drop_{r}" for r in other.drop_reasons)}),
                ("IP protocol", set(cls.ip_protocols), set(other.ip_protocols))):
            shared = sorted(mine & theirs)
            if shared:
                value = int(shared[0]) if isinstance(shared[0], int) else repr(shared[0])
                raise RegistryError(f"{where}: {what} {value} is {other.__name__}'s already")


for _cls in (PptpHelper, L2tpHelper, IpsecHelper):
    register(_cls)


def ipv6_switch_vpns() -> list[str]:
    """The VPNs whose helpers declare what they need let in over native IPv6 (``Helper.ipv6_inbound``): each has
    a switch ``ipv6_<name>`` (``[wan]``, ``ctl ipv6``)."""
    return [cls.name for cls in helper_classes() if cls.ipv6_inbound]
