"""The three passthrough switches: keys, on or off and the mode (single with its holder, multi) as the router
confirmed them, live flow count."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Static

from router.control import schema

from ..format import VPN_FLOW_NAMES, VPN_TITLES

KEYS = {"pptp": "p", "l2tp": "l", "ipsec": "i"}
"""Each switch's on/off key; its single/multi key is the same letter in capitals."""


class SwitchBar(Horizontal):
    DEFAULT_CSS = """
    SwitchBar { height: 1; background: $boost; }
    SwitchBar > Static { width: 1fr; height: 1; text-wrap: nowrap; text-overflow: ellipsis; }
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.items = {name: Static(id=f"switch-{name}", classes="switch") for name in schema.VPNS}

    def compose(self) -> ComposeResult:
        yield from self.items.values()

    _shown: tuple | None = None

    def update_view(self, modes: dict, holders: dict, pending: set, counts: dict) -> None:
        """``modes``: each switch's ``Model.switch_mode``; ``holders``: single mode's holder, if any."""
        shown = (tuple(modes.items()), tuple(holders.items()), tuple(sorted(pending)), tuple(counts.items()),
                 self.size.width)          # the items' widths decide whether holder and count fit
        if shown == self._shown:
            return
        self._shown = shown
        for name, item in self.items.items():
            item.update(switch_text(name, modes.get(name), holders.get(name), name in pending,
                                    counts.get(name, 0), item.size.width), layout=False)


def switch_text(name: str, mode: str | None, holder: str | None, pending: bool, count: int,
                width: int = 0) -> Text:
    """" p  PPTP  ON single 192.168.77.11  1 call": key, title, state and mode always; then the holder and the
    count, each only if it fits whole in ``width`` (0: no limit)."""
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(f" {KEYS[name]} ", style="bold reverse")
    text.append(f" {VPN_TITLES[name]} ", style="bold")
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
    one, many = VPN_FLOW_NAMES[name]
    extras = [(f"{holder} " if holder else "", "cyan"),
              (f" {count} {one if count == 1 else many}", "")]
    for extra, style in extras:
        if extra and (not width or text.cell_len + len(extra) <= width):
            text.append(extra, style=style)
    return text
