"""What a helper declares about itself, so that nothing outside its module has to say it again.

The config parser reads a helper's ``options`` (its own section, ``[ipsec]``
say) and ``timeouts`` (its keys in ``[timeouts]``); the control socket hands
``Helper.description()`` to its clients, and the dashboard draws its switch, its
key and its flows from that alone.  Plain frozen data: no helper state, no I/O.

The ``ids`` template of a ``FlowView`` is how the dashboard writes a flow's
protocol IDs in one cell (``router.control.flowview.render_ids`` reads it):

- literal text is copied;
- ``{name}``: the field's value, ``?`` when it is missing or null;
- ``{name:spi}``: an SPI (hex), cut to 8 digits with an ellipsis; a list of them joined by commas;
- ``{name:if|YES|NO}``: ``YES`` when the field is true, else ``NO``;
- ``{name:each|PREFIX|SEP|ITEM}``: a list of maps, each written as ``ITEM`` (where ``[key]`` stands for the
  item's value, ``?`` when null), joined by ``SEP``, after ``PREFIX``; nothing at all for an empty list.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Option:
    """A key of the helper's own configuration section (``[<helper name>]``)."""
    key: str
    default: str
    choices: tuple[str, ...]
    doc: str


@dataclass(frozen=True)
class Timeout:
    """A key of ``[timeouts]`` that belongs to the helper: an idle lifetime in seconds."""
    key: str
    default: float
    doc: str


@dataclass(frozen=True)
class ListEvent:
    """A helper event that adds to or removes from a list field of the flow it names (an L2TP session in its
    tunnel's ``sessions``): items are matched by ``key``; ``item`` names what an added item keeps of the event."""
    field: str
    key: str
    item: tuple[str, ...] = ()
    add: bool = True

    def to_dict(self) -> dict:
        return {"field": self.field, "key": self.key, "item": list(self.item), "add": self.add}


@dataclass(frozen=True)
class FlowView:
    """How a helper's flows (calls, tunnels, associations) look in ``ctl sessions`` and on the dashboard."""
    fields: tuple[str, ...]
    """The fields its flows add to a session dict (``ctl sessions --json``), in order."""
    client: str
    """The field the dashboard's "client" column shows."""
    server: str
    """The field its "server" column shows."""
    ids: str
    """Its "protocol IDs" column, as a template (this module's docstring)."""
    legend: str
    """What the IDs mean, in the title of the helper's group on the dashboard."""
    mark: str | None = None
    """A boolean field the dashboard marks with "!" (an ambiguous association)."""
    fixed: tuple[str, ...] = ()
    """Fields a ``vpn`` event naming the flow never changes (lists kept by ``list_events`` or by the router)."""
    ending_events: tuple[str, ...] = ()
    """Helper events after which the flow they name is gone (the dashboard drops it at once)."""
    list_events: dict[str, ListEvent] = field(default_factory=dict)
    """Helper events that change a list field of the flow they name."""

    def to_dict(self) -> dict:
        return {"fields": list(self.fields), "client": self.client, "server": self.server, "ids": self.ids,
                "legend": self.legend, "mark": self.mark, "fixed": list(self.fixed),
                "ending_events": list(self.ending_events),
                "list_events": {kind: event.to_dict() for kind, event in self.list_events.items()}}
