"""A VPN flow's protocol IDs in one short line, from the template its helper declares (``view.ids`` in
``version()["helpers"]``; the grammar is in ``router.helpers.spec``).

Pure: the dashboard imports it, and ``ctl`` could.  A template is parsed
once (``IdsTemplate``) and then written for any number of flows.
"""

from __future__ import annotations

import re
from functools import lru_cache

PLACE = re.compile(r"\{([a-z_][a-z0-9_]*)(?::([^{}]*))?\}")
ITEM = re.compile(r"\[([a-z_][a-z0-9_]*)\]")
SPI_DIGITS = 8
"""An SPI is cut to this many hex digits in the line (the details show it whole)."""


class TemplateError(ValueError):
    """A template that cannot be read; ``str()`` says where."""


def show(value) -> str:
    """A value as the line writes it: "?" for none."""
    return "?" if value is None else str(value)


def spi(value, width: int = SPI_DIGITS) -> str:
    """An SPI in hex, cut to ``width`` digits with an ellipsis; several joined by commas; "?" for none."""
    if value is None or value == []:
        return "?"
    if isinstance(value, list):
        return ",".join(spi(v, width) for v in value)
    text = str(value)
    return text if len(text) <= width else text[:width] + "…"


def _each(value, prefix: str, sep: str, item: str) -> str:
    if not isinstance(value, list) or not value:
        return ""
    parts = [ITEM.sub(lambda m, x=x: show(x.get(m.group(1))), item) for x in value if isinstance(x, dict)]
    return prefix + sep.join(parts) if parts else prefix


def _place(name: str, spec: str | None):
    """A function of the fields that writes one ``{name:spec}``."""
    if spec is None:
        return lambda fields: show(fields.get(name))
    kind, *args = spec.split("|")
    if kind == "spi" and not args:
        return lambda fields: spi(fields.get(name))
    if kind == "if" and len(args) == 2:
        yes, no = args
        return lambda fields: yes if fields.get(name) else no
    if kind == "each" and len(args) == 3:
        prefix, sep, item = args
        return lambda fields: _each(fields.get(name), prefix, sep, item)
    raise TemplateError(f"{{{name}:{spec}}}: the format is spi, if|YES|NO or each|PREFIX|SEP|ITEM")


class IdsTemplate:
    """A parsed template: literal text and placeholders, in order."""

    def __init__(self, text: str):
        self.text = text
        self.parts: list = []
        at = 0
        for match in PLACE.finditer(text):
            if match.start() > at:
                self.parts.append(_literal(text[at:match.start()]))
            self.parts.append(_place(match.group(1), match.group(2)))
            at = match.end()
        if at < len(text):
            self.parts.append(_literal(text[at:]))

    def render(self, fields: dict) -> str:
        return "".join(part(fields) for part in self.parts)


def _literal(text: str):
    if "{" in text or "}" in text:
        raise TemplateError(f"an unmatched brace in {text!r}")
    return lambda fields: text


@lru_cache(maxsize=64)
def template(text: str) -> IdsTemplate:
    return IdsTemplate(text)


def render_ids(text: str, fields: dict) -> str:
    """The flow's protocol IDs as its helper's template ``text`` writes them; the template itself if it cannot
    be read (a newer router's), so the dashboard still shows something true."""
    try:
        return template(text).render(fields)
    except TemplateError:
        return text
