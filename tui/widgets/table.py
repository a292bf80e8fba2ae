"""A table that renders only the rows on screen and keeps its cursor on a row's key, not its position.

``KeyedTable`` holds no data: it has the keys of its rows, in order, and asks
``cells(key)`` for the few rows it draws (a tuple of strings, one per column,
or one string for a group title).  Updating 10,000 rows is handing it a new
list of keys; a counter that changed is a repaint of the rows on screen.

The cursor is a key.  When rows move (a sort by bytes, rows opened above),
the selected row stays selected and keeps its place on the screen; only if it
disappears does the cursor fall to the row that took its place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Hashable, Sequence

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

SEPARATOR = " "


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    label: str
    width: int
    min_width: int | None = None
    """If set, the column gives up width, down to this, when the table is narrower than its columns."""
    right: bool = False
    shrink: int = 0
    """Columns with lower numbers give up their width first (down to ``min_width``); equal ones in turn."""
    drop: int | None = None
    """If set, the column is left out when even shrunk columns do not fit; lower numbers go first."""


class KeyedTable(ScrollView, can_focus=True):
    COMPONENT_CLASSES = {"keyed-table--header", "keyed-table--cursor", "keyed-table--group", "keyed-table--empty"}
    DEFAULT_CSS = """
    KeyedTable {
        scrollbar-size-vertical: 1;
        scrollbar-size-horizontal: 1;
        & > .keyed-table--header { text-style: bold; color: $text-primary; }
        & > .keyed-table--cursor { background: $block-cursor-blurred-background; }
        &:focus > .keyed-table--cursor { background: $block-cursor-background; color: $block-cursor-foreground; }
        & > .keyed-table--group { color: $text-secondary; text-style: bold; }
        & > .keyed-table--empty { color: $text-muted; }
    }
    """
    BINDINGS = [
        Binding("up", "move(-1)", "Up", show=False),
        Binding("down", "move(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "edge(-1)", "First", show=False),
        Binding("end", "edge(1)", "Last", show=False),
    ]

    class HeaderClicked(Message):
        """A column's title was clicked (the dashboard sorts by it)."""

        def __init__(self, table: "KeyedTable", column: str):
            super().__init__()
            self.table, self.column = table, column

        @property
        def control(self) -> "KeyedTable":
            return self.table

    def __init__(self, columns: Sequence[Column], cells: Callable[[Hashable], Sequence[str] | str], *,
                 selectable: Callable[[Hashable], bool] = lambda key: True, empty: str = "",
                 id: str | None = None, classes: str | None = None):
        super().__init__(id=id, classes=classes)
        self.columns = list(columns)
        self.cells = cells
        self.selectable = selectable
        self.empty = empty
        """What an empty table says."""
        self.rows: list = []
        self.cursor_key: Hashable | None = None
        self._cursor_index = -1
        self.sort_column: str | None = None
        self.sort_reverse = False
        self._styles: dict[str, Style] | None = None
        self._frame_width, self._frame_top, self._frame_left = 0, 0, 0
        self._layout = [(i, c, c.width) for i, c in enumerate(self.columns)]
        """(index in a row's cells, column, width) of the columns shown."""

    # -- data -------------------------------------------------------------------------------------

    def set_rows(self, rows: list) -> None:
        """New rows, in order; the cursor stays on its key and, if on screen, at its place on the screen."""
        old_index = self.cursor_index
        on_screen = 0 <= old_index - self.scroll_offset.y < self._page
        offset = old_index - self.scroll_offset.y
        self.rows = rows
        self._cursor_index = -1
        index = self.cursor_index
        if index < 0 and rows:
            index = self._nearest_selectable(min(max(old_index, 0), len(rows) - 1))
            self.cursor_key = rows[index] if index >= 0 else None
            self._cursor_index = index
        self._update_virtual_size()
        if index >= 0 and on_screen:
            self.scroll_to(y=max(0, index - offset), animate=False, immediate=True)
        self.refresh()

    def set_sort(self, column: str | None, reverse: bool) -> None:
        self.sort_column, self.sort_reverse = column, reverse
        self.refresh()

    @property
    def cursor_index(self) -> int:
        """The cursor's row, found by its key (-1 if none)."""
        index, rows = self._cursor_index, self.rows
        if self.cursor_key is None:
            return -1
        if not (0 <= index < len(rows) and rows[index] == self.cursor_key):
            try:
                index = rows.index(self.cursor_key)
            except ValueError:
                index = -1
            self._cursor_index = index
        return index

    def select(self, key: Hashable) -> None:
        """Put the cursor on a key (and scroll to it)."""
        if key in self.rows and self.selectable(key):
            self.cursor_key = key
            self._cursor_index = -1
            self._scroll_to_cursor()
            self.refresh()

    # -- geometry ---------------------------------------------------------------------------------

    @property
    def _page(self) -> int:
        return max(1, self.scrollable_content_region.height - 1)

    def _update_virtual_size(self) -> None:
        width = sum(w for _, _, w in self._layout) + len(SEPARATOR) * max(0, len(self._layout) - 1)
        self.virtual_size = Size(width, len(self.rows) + 1)

    def on_resize(self, event: events.Resize) -> None:
        self._fit_columns()

    def _fit_columns(self) -> None:
        """Narrower than its columns: shrink those that may (by ``shrink``, then the one with most to give),
        then leave out those that may go, until the columns fit or nothing more can give."""
        available = self.content_region.width - self.styles.scrollbar_size_vertical   # as if it scrolls
        shown = list(range(len(self.columns)))
        droppable = sorted((c.drop, i) for i, c in enumerate(self.columns) if c.drop is not None)
        while True:
            widths = {i: self.columns[i].width for i in shown}
            excess = sum(widths.values()) + len(SEPARATOR) * (len(shown) - 1) - available
            while excess > 0:
                giving = [(c.shrink, -(widths[i] - c.min_width), i) for i in shown
                          if (c := self.columns[i]).min_width is not None and widths[i] > c.min_width]
                if not giving:
                    break
                widths[min(giving)[2]] -= 1
                excess -= 1
            if excess <= 0 or not droppable:
                break
            shown.remove(droppable.pop(0)[1])
        self._layout = [(i, self.columns[i], widths[i]) for i in shown]
        self._update_virtual_size()
        self.refresh()

    # -- keys and mouse ---------------------------------------------------------------------------

    def action_move(self, delta: int) -> None:
        self._move_to(self.cursor_index + delta, delta)

    def action_page(self, direction: int) -> None:
        self._move_to(self.cursor_index + direction * self._page, direction)

    def action_edge(self, direction: int) -> None:
        self._move_to(0 if direction < 0 else len(self.rows) - 1, -direction)

    def _move_to(self, index: int, direction: int) -> None:
        if not self.rows:
            return
        index = min(max(index, 0), len(self.rows) - 1)
        step = 1 if direction >= 0 else -1
        probe = index
        while 0 <= probe < len(self.rows) and not self.selectable(self.rows[probe]):
            probe += step
        if not 0 <= probe < len(self.rows):
            probe = self._nearest_selectable(index)
        if probe >= 0:
            self.cursor_key, self._cursor_index = self.rows[probe], probe
            self._scroll_to_cursor()
            self.refresh()

    def _nearest_selectable(self, index: int) -> int:
        for distance in range(len(self.rows)):
            for probe in (index + distance, index - distance):
                if 0 <= probe < len(self.rows) and self.selectable(self.rows[probe]):
                    return probe
        return -1

    def _scroll_to_cursor(self) -> None:
        index, top = self.cursor_index, self.scroll_offset.y
        if index < 0:
            return
        if index < top:
            self.scroll_to(y=index, animate=False, immediate=True)
        elif index >= top + self._page:
            self.scroll_to(y=index - self._page + 1, animate=False, immediate=True)

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        if offset.y == 0:
            x = offset.x + self.scroll_offset.x
            for _, column, width in self._layout:
                if x < width + len(SEPARATOR):
                    self.post_message(self.HeaderClicked(self, column.key))
                    return
                x -= width + len(SEPARATOR)
            return
        index = self.scroll_offset.y + offset.y - 1
        if 0 <= index < len(self.rows) and self.selectable(self.rows[index]):
            self.cursor_key, self._cursor_index = self.rows[index], index
            self.refresh()

    def on_focus(self) -> None:
        self._styles = None
        self.refresh()

    def on_blur(self) -> None:
        self._styles = None
        self.refresh()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles = None

    # -- drawing ----------------------------------------------------------------------------------

    def _style(self, name: str) -> Style:
        """The rich style of a component class over the widget's (cached until styles or focus change)."""
        if self._styles is None:
            base = self.rich_style
            self._styles = {"": base, **{c: base + self.get_component_rich_style(c) for c in self.COMPONENT_CLASSES}}
        return self._styles[name]

    def render_lines(self, crop):
        self._frame_width = self.scrollable_content_region.width
        self._frame_top, self._frame_left = self.scroll_offset.y, self.scroll_offset.x
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        width, left = self._frame_width, self._frame_left
        base = self._style("")
        if y == 0:
            strip = Strip([Segment(self._header_text(), self._style("keyed-table--header"))])
        else:
            index = self._frame_top + y - 1
            if index >= len(self.rows):
                if index == 0 and self.empty:
                    return Strip([Segment(_fit(self.empty, width, False), self._style("keyed-table--empty"))])
                return Strip.blank(width, base)
            strip = self._row_strip(self.rows[index])
        return strip.crop_extend(left, left + width, base)

    def _row_strip(self, key: Hashable) -> Strip:
        cells = self.cells(key)
        if isinstance(cells, str):
            return Strip([Segment(cells, self._style("keyed-table--group"))])
        style = self._style("keyed-table--cursor" if key == self.cursor_key else "")
        text = SEPARATOR.join(_fit(str(cells[i]), width, column.right) for i, column, width in self._layout)
        return Strip([Segment(text, style)], len(text))

    def _header_text(self) -> str:
        titles = []
        for _, column, width in self._layout:
            label = column.label
            if column.key == self.sort_column:
                label += "▼" if self.sort_reverse else "▲"
            titles.append(_fit(label, width, column.right))
        return SEPARATOR.join(titles)


def _fit(text: str, width: int, right: bool) -> str:
    """The text in exactly ``width`` cells: padded, or cut with an ellipsis."""
    if not text.isascii():
        text = set_cell_size(text, cell_len(text)) if cell_len(text) <= width else \
            set_cell_size(text, width - 1) + "…"
        return set_cell_size(text, width) if not right else " " * (width - cell_len(text)) + text
    if len(text) > width:
        return text[:width - 1] + "…" if width > 1 else text[:width]
    return text.rjust(width) if right else text.ljust(width)
