"""The top line: which socket, whether the router answers, its uptime, which path forwards, its WAN (MAP-E,
DS-Lite: nothing for plain IPv4), the session count, pause."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


class StatusHeader(Static):
    DEFAULT_CSS = """
    StatusHeader { height: 1; background: $panel; color: $text; text-wrap: nowrap; text-overflow: ellipsis; }
    """

    _shown: tuple | None = None

    def update_view(self, *, socket: str, connected: bool, detail: str, uptime: str, sessions: int | None,
                    flows: int, paused: bool, path: str | None = None, wan: str | None = None) -> None:
        """``path``: the router's ``status()["dataplane"]["path"]`` ("fast" or "python"), None if it does not say;
        ``wan``: its WAN in brief (``format.wan_brief``), None for plain IPv4."""
        shown = (socket, connected, detail, uptime, sessions, flows, paused, path, wan, self.size.width)
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
            if wan:
                mode, _, rest = wan.partition(" ")
                line.append(f" {mode} ", style="bold magenta")
                line.append(f"{rest} " if rest else "")
            self._append_rest(line, f" {_short(socket)} ", sessions, flows)
        else:
            line.append(" disconnected, retrying ", style="bold reverse red")
            line.append(f" {_short(socket)} ", style="dim")
            line.append(f" {detail} ", style="italic")
        self.update(line, layout=False)

    def _append_rest(self, line: Text, socket: str, sessions: int | None, flows: int) -> None:
        """The socket and the counts, as much as fits the header's width: the socket (dim) is left out first,
        then the counts get shorter ("13 NAT, 4 VPN"); what still does not fit ends in an ellipsis."""
        full = f" {sessions:,} NAT sessions, {flows:,} VPN flows " if sessions is not None else ""
        short = f" {sessions:,} NAT, {flows:,} VPN " if sessions is not None else ""
        room = self.size.width - line.cell_len
        if not self.size.width or len(socket) + len(full) <= room:
            line.append(socket, style="dim")
            line.append(full)
        else:
            line.append(full if len(full) <= room else short)


PATHS = {"fast": (" fast path ", "bold cyan"), "python": (" Python only ", "bold yellow")}
"""Which path forwards established flows, as the header says it."""


def _short(path: str, width: int = 40) -> str:
    """A long socket path keeps its end: that is the part that differs."""
    return path if len(path) <= width else "…" + path[-(width - 1):]
