"""The top line: which socket, whether the router answers, its uptime, which path forwards, the session count,
pause."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


class StatusHeader(Static):
    DEFAULT_CSS = """
    StatusHeader { height: 1; background: $panel; color: $text; text-wrap: nowrap; text-overflow: ellipsis; }
    """

    _shown: tuple | None = None

    def update_view(self, *, socket: str, connected: bool, detail: str, uptime: str, sessions: int | None,
                    flows: int, paused: bool, path: str | None = None) -> None:
        """``path``: the router's ``status()["dataplane"]["path"]`` ("fast" or "python"), None if it does not say."""
        shown = (socket, connected, detail, uptime, sessions, flows, paused, path)
        if shown == self._shown:
            return
        self._shown = shown
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append(" vpnrouter ", style="bold reverse")
        if paused:
            line.append(" PAUSED (space) ", style="bold reverse yellow")
        if connected:
            line.append(" connected ", style="bold green")
            line.append(f" up {uptime} ")
            if path in PATHS:
                line.append(*PATHS[path])
            line.append(f" {_short(socket)} ", style="dim")
            if sessions is not None:
                line.append(f" {sessions:,} NAT sessions, {flows:,} VPN flows ")
        else:
            line.append(" disconnected, retrying ", style="bold reverse red")
            line.append(f" {_short(socket)} ", style="dim")
            line.append(f" {detail} ", style="italic")
        self.update(line, layout=False)


PATHS = {"fast": (" fast path ", "bold cyan"), "python": (" Python only ", "bold yellow")}
"""Which path forwards established flows, as the header says it."""


def _short(path: str, width: int = 40) -> str:
    """A long socket path keeps its end: that is the part that differs."""
    return path if len(path) <= width else "…" + path[-(width - 1):]
