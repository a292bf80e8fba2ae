"""Who may open a VPN through the router: access rules and single passthrough.

A VPN *attempt* is a new NAT session that a passthrough helper claims (a
control connection, a tunnel's UDP) or a new flow a helper opens on its own
(portless datagrams), named by (vpn, client, server).  It is
decided here, once, before anything is made for it:

1. **Rules** (``[[passthrough.rule]]``): the first whose vpn, client prefix
   and server prefix match decides "allow" or "deny"; with none,
   ``default_action``.
2. **Single passthrough** (``[passthrough] NAME = "single"``): one LAN client
   per protocol at a time, as a basic home router's "VPN passthrough".  A
   client *holds* a protocol while it has any session or flow of it; another
   client's attempt is refused until the holder's last one ends.

The holders are counted as sessions and flows open and close (``held``,
``released``), so a decision costs a few dictionary lookups; only new flows
ask.
"""

from __future__ import annotations

from ..behaviour import Rule
from ..packet.frame import ip_str


class Refusal:
    """Why an attempt was refused: the event kind (``denied``, ``refused_single``) and its details."""
    __slots__ = ("kind", "details")

    def __init__(self, kind: str, details: dict):
        self.kind = kind
        self.details = details

    @property
    def drop_reason(self) -> str:
        return "denied_by_rule" if self.kind == "denied" else "refused_single"


class Admission:
    def __init__(self, modes: dict[str, str], rules: tuple[Rule, ...], default_action: str):
        self.modes = modes
        """vpn -> "off" | "single" | "multi" (the router's own dict: switches change it)."""
        self.rules: list[Rule] = list(rules)
        self.hits: list[int] = [0] * len(self.rules)
        self.default_action = default_action
        self.holders: dict[str, dict[int, int]] = {vpn: {} for vpn in modes}
        """vpn -> {client address: its live sessions and flows of that vpn}."""

    # -- deciding --------------------------------------------------------------------------------

    def decide(self, vpn: str, client: int, server: int) -> Refusal | None:
        """None to let the attempt through, else why not."""
        index, action = self._match(vpn, client, server)
        if index is not None:
            self.hits[index] += 1
        if action == "deny":
            return Refusal("denied", {"client": ip_str(client), "server": ip_str(server),
                                      "rule": None if index is None else index + 1, "action": action})
        if self.modes.get(vpn) == "single":
            holder = self.holder(vpn)
            if holder is not None and holder != client:
                return Refusal("refused_single", {"client": ip_str(client), "server": ip_str(server),
                                                  "holder": ip_str(holder)})
        return None

    def _match(self, vpn: str, client: int, server: int) -> tuple[int | None, str]:
        for index, rule in enumerate(self.rules):
            if rule.matches(vpn, client, server):
                return index, rule.action
        return None, self.default_action

    def holder(self, vpn: str) -> int | None:
        """The client holding ``vpn`` (the first one, should several hold it: made before single mode)."""
        return next(iter(self.holders.get(vpn, {})), None)

    # -- counting holders --------------------------------------------------------------------------

    def held(self, vpn: str, client: int) -> None:
        clients = self.holders.setdefault(vpn, {})
        clients[client] = clients.get(client, 0) + 1

    def released(self, vpn: str, client: int) -> None:
        clients = self.holders.get(vpn, {})
        left = clients.get(client, 0) - 1
        if left > 0:
            clients[client] = left
        else:
            clients.pop(client, None)

    # -- rules at run time -------------------------------------------------------------------------

    def add_rule(self, rule: Rule, position: int | None = None) -> None:
        """Insert at ``position`` (from 1), or last."""
        if position is None:
            position = len(self.rules) + 1
        if not 1 <= position <= len(self.rules) + 1:
            raise ValueError(f"position: from 1 to {len(self.rules) + 1}")
        self.rules.insert(position - 1, rule)
        self.hits.insert(position - 1, 0)

    def delete_rule(self, index: int) -> None:
        if not 1 <= index <= len(self.rules):
            raise LookupError(f"no rule {index} (there are {len(self.rules)})")
        del self.rules[index - 1]
        del self.hits[index - 1]

    def view(self) -> dict:
        return {"default_action": self.default_action,
                "rules": [{"index": i + 1, **rule.to_dict(), "hits": self.hits[i]}
                          for i, rule in enumerate(self.rules)]}
