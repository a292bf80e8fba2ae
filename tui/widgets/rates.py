"""Packets and bytes per second per port and direction: a sparkline each, the number beside it.

One Line-API widget draws all four lines (lan in, lan out, wan in, wan out),
so a new reading is one repaint of four lines, not sixteen widgets.
"""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip
from textual.widget import Widget

from router.control import schema

from ..format import rate
from ..rates import Rates

DIRECTIONS = ("in", "out")
BARS = "▁▂▃▄▅▆▇█"
LABEL, PPS, BPS = 8, 10, 11
"""Widths of the label and of the two numbers."""


def sparkline(values: list[float], width: int) -> str:
    """The last ``width`` values as bars scaled to their largest (all zero: the lowest bar)."""
    values = values[-width:] if width > 0 else []
    top = max(values, default=0.0)
    bars = "".join(BARS[min(len(BARS) - 1, int(v / top * (len(BARS) - 1) + 0.5))] if top > 0 else BARS[0]
                   for v in values)
    return bars.rjust(width)


class RatesPanel(Widget):
    COMPONENT_CLASSES = {"rates--label", "rates--spark", "rates--number"}
    DEFAULT_CSS = """
    RatesPanel {
        height: 4;
        & > .rates--label { color: $text-muted; }
        & > .rates--spark { color: $accent; }
        & > .rates--number { color: $text; text-style: bold; }
    }
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.rates: Rates | None = None

    def update_view(self, rates: Rates) -> None:
        self.rates = rates
        self.refresh()

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        lines = [(port, direction) for port in schema.PORTS for direction in DIRECTIONS]
        if y >= len(lines) or self.rates is None:
            return Strip.blank(width, self.rich_style)
        port, direction = lines[y]
        history, current = self.rates.history[port], self.rates.current[port]
        spark = max(0, (width - LABEL - PPS - BPS - 2) // 2)
        label, bars, number = (self.rich_style + self.get_component_rich_style(f"rates--{part}")
                               for part in ("label", "spark", "number"))
        segments = [
            Segment(f"{port} {direction}".ljust(LABEL), label),
            Segment(sparkline(list(history[f"pps_{direction}"]), spark), bars),
            Segment(rate(current[f"pps_{direction}"], "p/s").rjust(PPS) + " ", number),
            Segment(sparkline(list(history[f"bps_{direction}"]), spark), bars),
            Segment(rate(current[f"bps_{direction}"], "B/s").rjust(BPS), number),
        ]
        return Strip(segments).crop_extend(0, width, Style.null() + self.rich_style)
