"""The event log: sessions up and down, switch and profile changes, drops with their reason (and VPN attempts the
router refused), VPN events, the link.

A Line-API widget over the last ``MAX_LINES`` entries: adding a hundred
entries is a list extension, and only the lines on screen are drawn.  It
follows the newest entry unless the user scrolled up to read.
"""

from __future__ import annotations

import time
from collections import deque

from rich.segment import Segment
from rich.style import Style
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from ..model import LogEntry

MAX_LINES = 1000
KINDS = ("opened", "closed", "switch", "profile", "drop", "vpn", "link", "error")
STAMP = 9
"""Width of "HH:MM:SS "."""


class EventLog(ScrollView, can_focus=True):
    COMPONENT_CLASSES = {"event-log--time", *(f"event-log--{kind}" for kind in KINDS)}
    DEFAULT_CSS = """
    EventLog {
        background: $surface;
        scrollbar-size-vertical: 1;
        scrollbar-size-horizontal: 1;
        & > .event-log--time { color: $text-muted; }
        & > .event-log--opened { color: $text-success; }
        & > .event-log--closed { color: $text-warning; }
        & > .event-log--switch { color: $text-accent; text-style: bold; }
        & > .event-log--profile { color: $text-accent; }
        & > .event-log--drop { color: $text-error; }
        & > .event-log--vpn { color: $text-secondary; }
        & > .event-log--link { text-style: bold; }
        & > .event-log--error { color: $text-error; text-style: bold; }
    }
    """

    def __init__(self, wall_offset: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.wall_offset = wall_offset
        """Add to a dashboard time (monotonic) to get the wall clock."""
        self.entries: deque[LogEntry] = deque(maxlen=MAX_LINES)
        self.follow = True
        """Show the newest entries as they come (until the user scrolls up)."""
        self._width = 0
        self._styles: dict[str, Style] | None = None

    def add(self, entries: list[LogEntry]) -> None:
        self.entries.extend(entries[-MAX_LINES:])
        self._width = max(self._width, STAMP + max(len(e.text) for e in entries))
        self.virtual_size = Size(self._width, len(self.entries))
        if self.follow:
            self.scroll_end(animate=False, x_axis=False)      # after the layout knows the new size
        self.refresh()

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        self.follow = new >= self.max_scroll_y             # scrolled up to read: stay there

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles = None

    def _style(self, name: str) -> Style:
        if self._styles is None:
            base = self.rich_style
            self._styles = {c: base + self.get_component_rich_style(c) for c in self.COMPONENT_CLASSES}
            self._styles[""] = base
        return self._styles.get(name, self._styles[""])

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        scroll_x, scroll_y = self.scroll_offset.x, self.scroll_offset.y
        index = scroll_y + y
        if index >= len(self.entries):
            return Strip.blank(width, self._style(""))
        entry = self.entries[index]
        stamp = time.strftime("%H:%M:%S ", time.localtime(entry.time + self.wall_offset))
        strip = Strip([Segment(stamp, self._style("event-log--time")),
                       Segment(entry.text, self._style(f"event-log--{entry.kind}"))])
        return strip.crop_extend(scroll_x, scroll_x + width, self._style(""))
