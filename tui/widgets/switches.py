"""The passthrough switches, one per protocol the router described: key, on or off and the mode (single with its
holder, multi) as the router confirmed them, live flow count; dimmed, with a line that says why, when they have no
effect (a DS-Lite WAN: the provider's AFTR does the NAT)."""

from __future__ import annotations

from rich.text import Text
from textual.containers import Horizontal
from textual.widgets import Static

from ..protocols import Protocol


class SwitchBar(Horizontal):
    DEFAULT_CSS = """
    SwitchBar { height: 1; background: $boost; }
    SwitchBar > Static { width: 1fr; height: 1; text-wrap: nowrap; text-overflow: ellipsis; }
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.protocols: dict[str, Protocol] = {}
        self.keys: dict[str, str] = {}
        """Each switch's on/off key, if it got one (``protocols.protocol_keys``); shown blank if not."""
        self.items: dict[str, Static] = {}

    _shown: tuple | None = None

    async def set_protocols(self, protocols: dict[str, Protocol], keys: dict[str, str]) -> None:
        """One switch per protocol, in the router's order (built again when the router describes others)."""
        items = {name: Static(id=f"switch-{name}", classes="switch") for name in protocols}
        async with self.batch():
            await self.remove_children()
            await self.mount_all(items.values())
        self.protocols, self.keys, self.items = protocols, keys, items
        self._shown = None

    def update_view(self, modes: dict, holders: dict, pending: set, counts: dict, effective: bool = True) -> None:
        """``modes``: each switch's ``Model.switch_mode``; ``holders``: single mode's holder, if any; ``effective``
        false: the switches change nothing (``status()["wan"]["passthrough_effective"]``), shown dim."""
        shown = (tuple(modes.items()), tuple(holders.items()), tuple(sorted(pending)), tuple(counts.items()),
                 tuple(item.size.width for item in self.items.values()), effective)   # whether holder and count fit
        if shown == self._shown:
            return
        self._shown = shown
        self.set_class(not effective, "-no-effect")
        for name, item in self.items.items():
            item.update(switch_text(self.protocols[name], self.keys.get(name, " "), modes.get(name),
                                    holders.get(name), name in pending, counts.get(name, 0), item.size.width,
                                    effective), layout=False)


class PassthroughNote(Static):
    """One line under the switches while they have no effect, with the router's reason; hidden otherwise."""
    DEFAULT_CSS = """
    PassthroughNote { height: 1; display: none; background: $boost; color: $text-warning;
                      text-style: italic; text-wrap: nowrap; text-overflow: ellipsis; }
    PassthroughNote.-shown { display: block; }
    """

    _shown: str | None = None

    def update_view(self, note: str | None) -> None:
        """``note``: why the switches have no effect (``format.passthrough_note``), or None to hide the line."""
        if note == self._shown:
            return
        self._shown = note
        self.set_class(note is not None, "-shown")
        self.update(f" ⚠ {note}" if note else "")


def switch_text(protocol: Protocol, key: str, mode: str | None, holder: str | None, pending: bool, count: int,
                width: int = 0, effective: bool = True) -> Text:
    """" p  <title>  ON single 192.168.77.11  1 <flow>": key, title, state and mode always; then the holder and
    the count, each only if it fits whole in ``width`` (0: no limit).  All dim if the switch has no effect."""
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(f" {key} ", style="bold reverse")
    text.append(f" {protocol.title} ", style="bold")
    if mode is None:
        text.append("  ?  ", style="dim")
    elif mode == "off":
        text.append(" OFF ", style="bold red")
    else:
        text.append(" ON ", style="bold green")
        if mode in ("single", "multi"):
            text.append(f"{mode} ", style="bold yellow" if mode == "single" else "")
    if pending:
        text.append("(asking) ", style="italic yellow")
    extras = [(f"{holder} " if holder else "", "cyan"),
              (f" {count} {protocol.noun(count)}", "")]
    for extra, style in extras:
        if extra and (not width or text.cell_len + len(extra) <= width):
            text.append(extra, style=style)
    if not effective:
        text.stylize("dim")
    return text
