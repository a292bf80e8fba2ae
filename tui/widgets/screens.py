"""The dashboard's modal screens: help (``?``), confirmation (``k``), a session's details (``enter``), the access
rules (``r``)."""

from __future__ import annotations

import time

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from ..decode import Decoded
from ..format import RULE_COLUMNS, detail_lines, rule_cells
from ..session import Session
from ..view import NUMBER_FIELDS, TEXT_FIELDS

FILTER_HELP = f"""\
Filter (/): words that must all match; enter keeps it, escape clears it.
  udp               any of proto, inside, outside, remote, state contains it
  remote:8.8.       a field contains the text ({", ".join(TEXT_FIELDS)})
  proto=tcp         a field is exactly the text
  idle>30  age<5m   seconds, or with s, m, h
  bytes>1M          in and out together, with k, M, G; also packets, id ({", ".join(NUMBER_FIELDS)})
  !state:est        not
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "Close")]

    def __init__(self, keys: list[tuple[str, str]]):
        super().__init__()
        self.keys = keys

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold reverse", no_wrap=True)
        table.add_column()
        for key, description in self.keys:
            table.add_row(f" {key} ", description)
        with VerticalScroll(id="help-box", classes="modal-box") as box:
            box.border_title = "vpnrouter tui: keys"
            box.border_subtitle = "escape to close"
            yield Static(table)
            yield Static(FILTER_HELP, id="filter-help")


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, question: str):
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-box", classes="modal-box") as box:
            box.border_title = "confirm"
            yield Static(self.question, id="question")
            with Horizontal(id="confirm-buttons"):
                yield Button("Yes (y)", id="yes", variant="error")
                yield Button("No (n)", id="no", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class DetailsScreen(ModalScreen[None]):
    """One session's fields, kept live by the app, and the frames of a short capture as they come."""

    BINDINGS = [Binding("escape,enter,q", "dismiss", "Close")]

    def __init__(self, session: Session, now: float, capture_note: str):
        super().__init__()
        self.session_id = session.id
        self._first = (session, now)
        self.frames: list[tuple[float, Decoded]] = []
        self.capture_note = capture_note

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="details-box", classes="modal-box") as box:
            box.border_title = f"session {self.session_id}"
            box.border_subtitle = "escape to close"
            yield Static(id="fields")
            yield Static(id="capture-note")
            yield Static(id="frames")

    def on_mount(self) -> None:
        self.update_view(*self._first)
        self.set_capture_note(self.capture_note)

    def update_view(self, session: Session | None, now: float) -> None:
        if session is None:
            self.query_one("#fields", Static).update(Text("closed: the router no longer has this session",
                                                          style="bold yellow"))
            return
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        for name, value in detail_lines(session, now):
            table.add_row(name, value)
        self.query_one("#fields", Static).update(table)

    def set_capture_note(self, note: str) -> None:
        self.capture_note = note
        self.query_one("#capture-note", Static).update(Text(note, style="italic"))

    def add_frame(self, wall_time: float, decoded: Decoded) -> None:
        self.frames.append((wall_time, decoded))
        text = Text()
        for n, (t, d) in enumerate(self.frames, 1):
            stamp = time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"
            text.append(f"{n:>2} {stamp}  ", style="dim")
            text.append(d.summary + "\n", style="bold")
            text.append("".join(f"     {line}\n" for line in d.layers.splitlines() if line.strip()), style="dim")
        self.query_one("#frames", Static).update(text)


class RulesScreen(ModalScreen[None]):
    """The access rules as the router's ``rules`` answer gives them; ``r`` asks again (the hits grow)."""

    BINDINGS = [Binding("escape,q", "dismiss", "Close"), Binding("r,R", "app.read_rules", "Read again")]
    shown: dict | None = None
    """The ``rules`` answer shown, once one came."""

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="rules-box", classes="modal-box") as box:
            box.border_title = "access rules"
            box.border_subtitle = "r to read again, escape to close"
            yield Static(Text("reading the rules…", style="italic"), id="rules")

    def show_rules(self, view: dict) -> None:
        self.shown = view
        rules = view.get("rules") or []
        text = Text()
        text.append(f"default action: {view.get('default_action', '?')}", style="bold")
        text.append("  (an attempt that no rule matches)\n")
        text.append("The first rule whose vpn, client and server match an attempt decides; "
                    "hits: the attempts it decided.\n", style="dim")
        if not rules:
            text.append("\nno rules: every attempt gets the default action", style="italic")
            self.query_one("#rules", Static).update(text)
            return
        table = Table(box=None, pad_edge=False, header_style="bold", padding=(0, 2, 0, 0))
        for label, right in RULE_COLUMNS:
            table.add_column(label, justify="right" if right else "left", no_wrap=True)
        for rule in rules:
            cells = rule_cells(rule)
            table.add_row(*cells[:4], Text(cells[4], style=ACTION_STYLES.get(cells[4], "")), cells[5])
        self.query_one("#rules", Static).update(Group(text, table))

    def show_error(self, reason: str) -> None:
        self.query_one("#rules", Static).update(Text(f"could not read the rules: {reason}", style="bold red"))


ACTION_STYLES = {"allow": "bold green", "deny": "bold red"}
