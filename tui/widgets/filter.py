"""The filter line under the NAT table (``/``): an input, and how many rows match or why it cannot be read."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Input, Label

PLACEHOLDER = "filter: udp  remote:8.8.  proto=tcp  idle>30  bytes>1M  !state:established"


class FilterBar(Horizontal):
    BINDINGS = [Binding("escape", "app.clear_filter", "Clear the filter")]
    DEFAULT_CSS = """
    FilterBar { height: 1; display: none; }
    FilterBar.-visible { display: block; }
    FilterBar > Input, FilterBar > Input:focus { width: 1fr; height: 1; border: none; padding: 0 1; }
    FilterBar > Label { width: auto; height: 1; padding: 0 1; color: $text-muted; }
    FilterBar > Label.-error { color: $text-error; }
    """

    def compose(self) -> ComposeResult:
        yield Input(placeholder=PLACEHOLDER, id="filter-input", select_on_focus=False)
        yield Label("", id="filter-note")

    @property
    def input(self) -> Input:
        return self.query_one(Input)

    def show_note(self, note: str, error: bool = False) -> None:
        label = self.query_one("#filter-note", Label)
        label.update(note)
        label.set_class(error, "-error")
