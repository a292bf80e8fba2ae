"""The top line: which socket, whether the router answers, its uptime, the session count, pause."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


class StatusHeader(Static):
    DEFAULT_CSS = """
    StatusHeader { height: 1; background: $panel; color: $text; text-wrap: nowrap; text-overflow: ellipsis; }
    """

    _shown: tuple | None = None

    def update_view(self, *, socket: str, connected: bool, detail: str, uptime: str, sessions: int | None,
                    flows: int, paused: bool) -> None:
        shown = (socket, connected, detail, uptime, sessions, flows, paused)
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
            line.append(f" {_short(socket)} ", style="dim")
            if sessions is not None:
                line.append(f" {sessions:,} NAT sessions, {flows:,} VPN flows ")
        else:
            line.append(" disconnected, retrying ", style="bold reverse red")
            line.append(f" {_short(socket)} ", style="dim")
            line.append(f" {detail} ", style="italic")
        self.update(line, layout=False)


def _short(path: str, width: int = 40) -> str:
    """A long socket path keeps its end: that is the part that differs."""
    return path if len(path) <= width else "…" + path[-(width - 1):]
