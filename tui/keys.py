"""The dashboard's keys: its own, each protocol's from the router's description, the help screen's lines, and what
the keys that ask the router or open a screen do (a mixin of the App, as ``requests.RequestsMixin``).

A protocol's letter turns its switch on and off, and the capital switches
single/multi.  They are bound when the router describes its protocols, ahead
of the dashboard's own in the footer: every letter, then the capitals as one
group ("Single/multi").  A letter that is already one of the dashboard's keys
stays the dashboard's; the event log says so.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from textual.binding import Binding, BindingsMap

from . import format as fmt
from .protocols import MODE, SWITCH, Protocol, ProtocolKey, protocol_keys, title
from .session import Session
from .widgets.screens import ConfirmScreen, DetailsScreen, HelpScreen, RulesScreen

MODE_KEYS = Binding.Group("Single/multi")
"""The protocols' capitals in the footer: one label for them all."""
OWN_BINDINGS = [
    Binding("slash", "filter", "Filter", key_display="/"),
    Binding("enter", "details", "Details"),
    Binding("k", "close_session", "Close"),
    Binding("c", "capture", "Pcap"),
    Binding("r", "rules", "Rules"),
    Binding("space", "pause", "Pause"),
    Binding("question_mark", "help", "Help", key_display="?"),
    Binding("q", "quit", "Quit"),
    Binding("tab", "focus_next", "Pane", show=False, priority=True),
    Binding("s", "sort(1)", "Sort", show=False),
    Binding("S", "sort(-1)", "Reverse sort", show=False),
]
"""The dashboard's own keys (the App's ``BINDINGS``), after the protocols' in the footer."""
KEYS = [
    ("r", "the access rules and their hits (r there: read them again)"),
    ("/", "filter the NAT sessions"), ("enter", "details of the selected session, with its last packets"),
    ("k", "close the selected session (asks first)"), ("c", "capture the selected session to a pcap file"),
    ("space", "pause / resume the view"), ("tab", "next pane (shift+tab: previous)"),
    ("s / S", "sort the NAT sessions by the next column / reverse (or click a title)"),
    ("up down pgup pgdn home end", "move in a table"), ("?", "this help"), ("q", "quit"),
]
"""The help screen's lines for the dashboard's own keys, after the protocols'."""


def binding(key: ProtocolKey) -> Binding:
    """A protocol's key as the footer shows it: its letter and title, or its capital in the "Single/multi" group."""
    protocol = key.protocol
    if key.kind == SWITCH:
        return Binding(key.key, f"switch({protocol.name!r})", protocol.title)
    return Binding(key.key, f"mode({protocol.name!r})", f"{protocol.title} single/multi", group=MODE_KEYS)


def help_lines(keys: Sequence[ProtocolKey]) -> list[tuple[str, str]]:
    """The help screen's lines: a line per protocol letter, one for all the capitals, then the dashboard's own."""
    lines = [(k.key, f"{k.protocol.title} passthrough on/off") for k in keys if k.kind == SWITCH]
    modes = [k for k in keys if k.kind == MODE]
    if modes:
        titles = ", ".join(k.protocol.title for k in modes)
        lines.append((" ".join(k.key for k in modes),
                      f"{titles} passthrough single (one LAN client at a time) / multi; from off: single"))
    return lines + KEYS


class KeysMixin:
    """For the App: needs ``model``, ``clock``, ``wallclock``, the capture and details settings, ``selected``,
    ``_update_header`` and the requests (``RequestsMixin``); ``_own_bindings`` is the App's bindings as made."""

    protocol_keys: tuple[ProtocolKey, ...] = ()
    """The keys the protocols were given, as bound."""

    def bind_protocol_keys(self, protocols: dict[str, Protocol]) -> list[str]:
        """Bind the protocols' keys ahead of the dashboard's own; a note for each key a protocol does not get."""
        own = self._own_bindings
        keys, notes = protocol_keys(protocols, {key: b.description or b.action for key, b in own})
        theirs = BindingsMap(binding(k) for k in keys)
        self._bindings = BindingsMap.from_keys({**theirs.key_to_bindings, **own.key_to_bindings})
        self.protocol_keys = tuple(keys)
        for screen in self.screen_stack:
            screen.refresh_bindings()
        return notes

    def action_switch(self, name: str) -> None:
        """On to off and back ("on": the mode it had before)."""
        mode = self.model.switch_mode(name)
        self._set_passthrough(name, mode, "on" if mode == "off" else "off")

    def action_mode(self, name: str) -> None:
        """Single to multi and back; from off, on in single."""
        mode = self.model.switch_mode(name)
        self._set_passthrough(name, mode, "multi" if mode == "single" else "single")

    def _set_passthrough(self, name: str, mode: str | None, value: str) -> None:
        if not self.model.connected or mode is None:
            self._failed("set_passthrough", f"{title(self.model.protocols, name)}: not connected to the router")
            return
        self.model.pending.add(name)
        self._update_header(self.clock())
        self._request("set_passthrough", name, value)

    def action_rules(self) -> None:
        self.push_screen(RulesScreen())
        self.action_read_rules()

    def action_read_rules(self) -> None:
        """Ask for the rules; the answer goes to the rules screen if it is still up."""
        self._request("rules")

    def action_help(self) -> None:
        self.push_screen(HelpScreen(help_lines(self.protocol_keys)))

    def action_close_session(self) -> None:
        session = self.selected()
        if session is None:
            return
        sid = session.id

        def answered(yes: bool | None) -> None:
            if yes:
                self._request("close_session", sid)

        self.push_screen(ConfirmScreen(f"Close {describe(session, self.model.protocols)}?"), answered)

    def action_details(self) -> None:
        session = self.selected()
        if session is None:
            return
        note = f"capturing up to {self.details_frames} frames for {self.details_seconds:g} s"
        screen = DetailsScreen(session, self.clock(), note)
        self.push_screen(screen)
        self.run_worker(self._details_capture(screen, session.id), group="details", exit_on_error=False)

    def action_capture(self) -> None:
        session = self.selected()
        if session is None:
            return
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(self.wallclock()))
        path = self.capture_dir / f"vpnrouter-{session.id}-{stamp}.pcap"
        self.notify(f"capturing session {session.id} to {path} "
                    f"({self.capture_frames} frames or {self.capture_seconds:g} s)", title="capture")
        self.run_worker(self._capture_to_file(session.id, path), group="captures", exit_on_error=False)

    async def action_quit(self) -> None:
        self.link.stop()
        self.exit(0)


def describe(session: Session, protocols: dict[str, Protocol]) -> str:
    """A session or flow in a question: "<title> 3 (<its protocol IDs>)", "session 7 (udp a -> b)"."""
    protocol = protocols.get(session.vpn)
    if session.flow and protocol is not None:
        return f"{protocol.title} {session.id} ({fmt.protocol_ids(session, protocol)})"
    return f"session {session.id} ({session.proto} {session.inside} -> {session.remote})"
