"""The three passthrough switches: key, state as the router confirmed it, live flow count."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Static

from router.control import schema

from ..format import VPN_FLOW_NAMES, VPN_TITLES

KEYS = {"pptp": "p", "l2tp": "l", "ipsec": "i"}


class SwitchBar(Horizontal):
    DEFAULT_CSS = """
    SwitchBar { height: 1; background: $boost; }
    SwitchBar > Static { width: 1fr; height: 1; }
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.items = {name: Static(id=f"switch-{name}", classes="switch") for name in schema.VPNS}

    def compose(self) -> ComposeResult:
        yield from self.items.values()

    _shown: tuple | None = None

    def update_view(self, switches: dict, pending: set, counts: dict) -> None:
        shown = (tuple(switches.items()), tuple(sorted(pending)), tuple(counts.items()))
        if shown == self._shown:
            return
        self._shown = shown
        for name, item in self.items.items():
            item.update(switch_text(name, switches.get(name), name in pending, counts.get(name, 0)), layout=False)


def switch_text(name: str, on: bool | None, pending: bool, count: int) -> Text:
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(f" {KEYS[name]} ", style="bold reverse")
    text.append(f" {VPN_TITLES[name]} ", style="bold")
    if on is None:
        text.append("  ?  ", style="dim")
    elif on:
        text.append(" ON  ", style="bold green")
    else:
        text.append(" OFF ", style="bold red")
    if pending:
        text.append("(asking) ", style="italic yellow")
    one, many = VPN_FLOW_NAMES[name]
    text.append(f" {count} {one if count == 1 else many}")
    return text
