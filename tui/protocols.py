"""The router's VPN protocols as the dashboard learns them: ``version()["helpers"]``, read at every connection.

Pure: no Textual.  The dashboard names no protocol itself.  Its switches and
their keys, the VPN pane's groups and cells, the event log's lines and what a
``vpn`` event changes are all written from these descriptions
(``router.control.schema.HELPER_FIELDS``; the ``view``'s keys are those of the
helpers' ``FlowView``).  A description the dashboard cannot read is left out,
with a note that says why; the others still work.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
"""A protocol's name as the dashboard takes it: a plain word, so it can name an action (``switch('name')``)."""
SWITCH, MODE = "switch", "mode"
"""What a protocol's key does: its letter turns the switch on and off, its capital switches single/multi."""


class DescriptionError(ValueError):
    """A description the dashboard cannot read; ``str()`` says what is wrong."""


@dataclass(frozen=True, slots=True)
class ListEvent:
    """A helper event that adds or removes one item of a list field of the flow it names, items matched by
    ``key``; an added item keeps the event's ``item`` fields."""
    field: str
    key: str
    item: tuple[str, ...]
    add: bool

    def apply(self, items: list, event: dict) -> list:
        """The list after the event: any item with the event's ``key`` taken out, then the new one added."""
        kept = [x for x in items if not (isinstance(x, dict) and x.get(self.key) == event.get(self.key))]
        if self.add:
            kept.append({name: event.get(name) for name in self.item})
        return kept


@dataclass(frozen=True, slots=True)
class Protocol:
    """One VPN protocol as its helper describes it (names as in ``HELPER_FIELDS`` and the ``view``)."""
    name: str
    """Its switch, and the ``vpn`` of its sessions and events."""
    title: str
    key: str
    """The key its helper asks for (``protocol_keys`` decides whether it gets it)."""
    nouns: tuple[str, str]
    """What one flow and several are called on screen."""
    flow_proto: str
    """The ``proto`` of its own flows: a session of this ``vpn`` and this ``proto`` is a flow, not NAT."""
    client: str
    """The field the VPN pane's client column shows."""
    server: str
    """The field its server column shows."""
    ids: str
    """The protocol IDs column's template (``router.control.flowview``)."""
    legend: str
    """What the IDs mean, in its group's title."""
    mark: str | None
    """A boolean field marked "!" in the VPN pane, if any."""
    changing: frozenset[str]
    """The fields a ``vpn`` event naming one of its flows may change (the view's ``fields`` but its ``fixed``)."""
    ending_events: frozenset[str]
    """Its events after which the flow they name is gone."""
    list_events: dict[str, ListEvent]
    """Its events that change a list field of the flow they name, by event."""

    def noun(self, count: int) -> str:
        return self.nouns[0] if count == 1 else self.nouns[1]

    def merge(self, fields: dict, event: dict) -> dict:
        """What a ``vpn`` event naming one of this protocol's flows changes in the flow's ``fields``."""
        merged = {name: value for name, value in event.items() if name in self.changing}
        change = self.list_events.get(event.get("event"))
        if change is not None:
            merged[change.field] = change.apply(fields.get(change.field) or [], event)
        return merged


def read_protocols(helpers: list | None) -> tuple[dict[str, Protocol], list[str]]:
    """The protocols a router described, by name in the order of its switches, and a note for each description
    left out."""
    protocols: dict[str, Protocol] = {}
    notes = []
    for description in helpers or ():
        try:
            protocol = _protocol(description)
        except (DescriptionError, AttributeError, KeyError, TypeError, ValueError) as exc:
            name = description.get("name") if isinstance(description, dict) else None
            notes.append(f"the router's protocol {name!r} is left out: the dashboard cannot read its description "
                         f"({_reason(exc)})")
            continue
        if protocol.name in protocols:
            notes.append(f"the router's protocol {protocol.name!r} is described twice: the first description is kept")
            continue
        protocols[protocol.name] = protocol
    return protocols, notes


def _protocol(description) -> Protocol:
    if not isinstance(description, dict) or not isinstance(description.get("view"), dict):
        raise DescriptionError("no view")
    name, view = description["name"], description["view"]
    if not isinstance(name, str) or not NAME.match(name):
        raise DescriptionError(f"name {name!r} is not a plain word")
    noun = description.get("noun")
    if not (isinstance(noun, list) and len(noun) == 2):
        raise DescriptionError(f"noun {noun!r} is not [one, several]")
    one, many = noun
    list_events = {str(kind): ListEvent(str(e["field"]), str(e["key"]), tuple(map(str, e["item"])), bool(e["add"]))
                   for kind, e in (view.get("list_events") or {}).items()}
    return Protocol(
        name=name, title=str(description.get("title") or name), key=str(description.get("key") or ""),
        nouns=(str(one), str(many)), flow_proto=str(description["flow_proto"]),
        client=str(view.get("client") or "client"), server=str(view.get("server") or "server"),
        ids=str(view.get("ids") or ""), legend=str(view.get("legend") or ""),
        mark=str(view["mark"]) if view.get("mark") else None,
        changing=frozenset(map(str, view["fields"])) - frozenset(map(str, view.get("fixed") or ())),
        ending_events=frozenset(map(str, view.get("ending_events") or ())), list_events=list_events)


def _reason(exc: Exception) -> str:
    return f"no {exc.args[0]!r}" if isinstance(exc, KeyError) else str(exc)


# -- protocols recognised without a helper ----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Recogniser:
    """A protocol the router recognises without a helper (``version()["recognisers"]``,
    ``router.control.schema.RECOGNISER_FIELDS``): its sessions are plain UDP or TCP NAT sessions, named."""
    name: str
    """``recognised`` in its sessions."""
    title: str
    proto: str
    """"udp" or "tcp"."""
    port: int
    """The server's well-known port."""


def read_recognisers(descriptions: list | None) -> tuple[dict[str, Recogniser], list[str]]:
    """The recognisers a router described, by name in its order, and a note for each description left out (a
    router older than them describes none)."""
    recognisers: dict[str, Recogniser] = {}
    notes = []
    for description in descriptions or ():
        try:
            recogniser = Recogniser(str(description["name"]), str(description.get("title") or description["name"]),
                                    str(description["proto"]), int(description["port"]))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            name = description.get("name") if isinstance(description, dict) else None
            notes.append(f"the router's recogniser {name!r} is left out: the dashboard cannot read its description "
                         f"({_reason(exc)})")
            continue
        recognisers.setdefault(recogniser.name, recogniser)
    return recognisers, notes


def flow_protos(protocols: dict[str, Protocol]) -> dict[str, str]:
    """vpn -> the ``proto`` of its own flows, for ``schema.is_vpn_flow``."""
    return {name: protocol.flow_proto for name, protocol in protocols.items()}


def title(protocols: dict[str, Protocol], name) -> str:
    """A protocol's title; the name itself for one the router did not describe."""
    protocol = protocols.get(name)
    return protocol.title if protocol is not None else str(name)


# -- keys -------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ProtocolKey:
    """A key the dashboard gives a protocol: ``SWITCH`` (on/off) or ``MODE`` (single/multi)."""
    key: str
    kind: str
    protocol: Protocol


def protocol_keys(protocols: dict[str, Protocol], taken: dict[str, str]) -> tuple[list[ProtocolKey], list[str]]:
    """Each protocol's keys, every on/off key first (as the footer shows them), then the capitals; and a note for
    each key it asks for and does not get.  A key in ``taken`` (key -> what it does) keeps doing that."""
    taken = dict(taken)
    keys, notes = [], []
    for kind, case, does in ((SWITCH, str.lower, "on/off"), (MODE, str.upper, "single/multi")):
        for protocol in protocols.values():
            if not (len(protocol.key) == 1 and protocol.key in string.ascii_lowercase):
                if kind == SWITCH:
                    notes.append(f"{protocol.title} asks for the key {protocol.key!r}, not one lower-case letter: "
                                 f"its switch has no keys")
                continue
            key = case(protocol.key)
            if key in taken:
                notes.append(f"{protocol.title} asks for the key {key}, which is {taken[key]}: "
                             f"{protocol.title} {does} has no key")
                continue
            taken[key] = f"{protocol.title} {does}"
            keys.append(ProtocolKey(key, kind, protocol))
    return keys, notes
