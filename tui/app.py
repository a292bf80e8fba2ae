"""``vpnrouter tui``: the live dashboard of a running router, through its control socket only.

The link (``client.Link``, a worker) posts what the router says as messages;
their handlers apply it to the model (``model.Model``); a timer hands the
model's changes to the widgets a few times a second.  So hundreds of events a
second cost a dictionary update each, and the screen is redrawn four times a
second whatever comes.  Requests (switches, close, capture, rules) run as
workers that post their answer; a refusal is a notification, never a crash.

The router describes its VPN protocols at every connection; the switch bar,
the protocols' keys (``keys``) and the VPN pane's groups are built from that
whenever it changes.  It also lists the protocols it recognises without a
helper: their sessions get a group of their own in the VPN pane, after the
helpers', while they have any.  The dashboard itself names no protocol.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import Callable

from textual import on
from textual.app import App, ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Footer, Input

from router.control import schema

from . import format as fmt
from .client import Described, Dropped, Events, Link, LinkDown, LinkUp, Snapshot, Status, Subscribed
from .keys import OWN_BINDINGS, KeysMixin
from .model import Model
from .protocols import SWITCH
from .requests import RequestsMixin
from .session import Session
from .view import SORT_KEYS, FilterError, TableView
from .widgets.events import EventLog
from .widgets.filter import FilterBar
from .widgets.header import StatusHeader
from .widgets.rates import RatesPanel
from .widgets.screens import DetailsScreen
from .widgets.switches import PassthroughNote, SwitchBar
from .widgets.table import Column, KeyedTable

REFRESH_INTERVAL = 0.25
"""Seconds between two screen updates: events in between are applied to the model only."""
MAX_HELD = 200_000
"""Events held while paused; beyond this they are let go and the table is read again on resume."""

NAT_COLUMNS = [
    Column("id", "id", 6, right=True, drop=2),
    Column("proto", "proto", 5),
    Column("inside", "inside", 21, 17, shrink=-1),
    Column("outside", "outside", 21, 17, shrink=-1, drop=1),
    Column("remote", "remote", 21, 17, shrink=-1),
    Column("state", "state", 11, 6),
    Column("idle", "idle", 5, right=True),
    Column("packets", "pkts in/out", 11, right=True),
    Column("bytes", "bytes in/out", 12, right=True),
]
"""The NAT table; narrow, the addresses give up width first, then outside and id are left out."""
VPN_COLUMNS = [
    Column("id", "id", 6, right=True, drop=2),
    Column("client", "client", 15, 11),
    Column("peer", "server", 15, 11),
    Column("ids", "protocol IDs", 52, 14, shrink=-2),
    Column("state", "state", 11, 6, shrink=-1),
    Column("mark", "!", 1),
    Column("age", "age", 5, right=True, drop=1),
    Column("idle", "idle", 5, right=True),
    Column("packets", "pkts in/out", 11, right=True),
    Column("bytes", "bytes in/out", 12, right=True),
]
"""The VPN pane: calls, tunnels and associations under their protocol's title ("!" marks an ambiguous one), then
the sessions of protocols recognised without a helper under theirs."""
RECOGNISED = "recognised"
"""The first item of a recognised protocol's group key in the VPN pane (``(RECOGNISED, name)``): no helper's name
can be a tuple."""
SORT_ORDER = [c.key for c in NAT_COLUMNS if c.key in SORT_KEYS]


class DashboardApp(KeysMixin, RequestsMixin, App[int]):
    CSS_PATH = "styles.tcss"
    TITLE = "vpnrouter"
    ENABLE_COMMAND_PALETTE = False
    VERTICAL_BREAKPOINTS = [(0, "-short"), (34, "-tall")]
    BINDINGS = OWN_BINDINGS
    """The dashboard's own keys; each protocol's are bound when the router describes it (``keys``)."""

    class LinkMessage(Message):
        """Something the link heard from the router (a ``client.LinkItem``)."""

        def __init__(self, item) -> None:
            super().__init__()
            self.item = item

    def __init__(self, socket_path: str = schema.DEFAULT_SOCKET, *, clock: Callable[[], float] = time.monotonic,
                 wallclock: Callable[[], float] = time.time, refresh_interval: float = REFRESH_INTERVAL,
                 status_interval: float = 1.0, capture_dir: str | Path | None = None,
                 capture_frames: int = 100, capture_seconds: float = 10.0,
                 details_frames: int = 5, details_seconds: float = 3.0):
        super().__init__()
        self._own_bindings = self._bindings
        """The dashboard's own keys as Textual made them; the protocols' go ahead of them (``keys``)."""
        self.socket_path = socket_path
        self.clock, self.wallclock = clock, wallclock
        self.refresh_interval, self.status_interval = refresh_interval, status_interval
        self.capture_dir = Path(capture_dir) if capture_dir is not None else Path.cwd()
        self.capture_frames, self.capture_seconds = capture_frames, capture_seconds
        self.details_frames, self.details_seconds = details_frames, details_seconds
        self.model = Model()
        self.nat_view = TableView(lambda s: not s.flow)
        self.link = Link(socket_path, self._emit, status_interval)
        self.paused = False
        self._held: list = []
        self._held_events = 0
        self._active_table: KeyedTable | None = None
        self._shown_version = -1
        self._shown_second = -1
        self._shown_status: dict | None = None
        self._shown_protocols = self.model.protocols
        self.update_times: deque[float] = deque(maxlen=10_000)
        """Seconds each screen update took (model to widgets), for ``tests.perf.dashboard``."""

    # -- layout -----------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield StatusHeader(id="header")
        yield SwitchBar(id="switches")
        yield PassthroughNote(id="passthrough-note")
        with Vertical(id="main"):
            with Vertical(id="vpn-pane", classes="pane"):
                yield KeyedTable(VPN_COLUMNS, self._vpn_cells, selectable=lambda key: isinstance(key, int),
                                 id="vpn")
            with Vertical(id="nat-pane", classes="pane"):
                yield KeyedTable(NAT_COLUMNS, self._nat_cells, id="nat", empty="no NAT sessions")
                yield FilterBar(id="filter")
        with Horizontal(id="bottom"):
            with Vertical(id="rates-pane", classes="pane"):
                yield RatesPanel(id="rates")
            with Vertical(id="events-pane", classes="pane"):
                yield EventLog(wall_offset=self.wallclock() - self.clock(), id="events")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        # Kept, not queried: while a modal screen is up, queries look in it.
        self.header = self.query_one(StatusHeader)
        self.switch_bar = self.query_one(SwitchBar)
        self.passthrough_note = self.query_one(PassthroughNote)
        self.vpn_table = self.query_one("#vpn", KeyedTable)
        self.nat_table = self.query_one("#nat", KeyedTable)
        self.nat_pane = self.query_one("#nat-pane")
        self.vpn_pane = self.query_one("#vpn-pane")
        self.filter_bar = self.query_one(FilterBar)
        self.rates_panel = self.query_one(RatesPanel)
        self.event_log = self.query_one(EventLog)
        self.query_one("#rates-pane").border_title = "rates: packets and bytes per second"
        self.query_one("#events-pane").border_title = "events"
        self.nat_table.set_sort(self.nat_view.sort, self.nat_view.reverse)
        self.nat_table.focus()
        self.run_worker(self.link.run(), name="link", group="link", exit_on_error=False)
        self.set_interval(self.refresh_interval, self.refresh_view)
        self.refresh_view()

    # -- what the router says ---------------------------------------------------------------------

    def _emit(self, item) -> None:
        self.post_message(self.LinkMessage(item))

    @on(LinkMessage)
    def _on_link(self, message: LinkMessage) -> None:
        item = message.item
        if self.paused and not isinstance(item, (LinkUp, LinkDown, Described)):
            self._hold(item)
            return
        self._apply(item)

    def _apply(self, item) -> None:
        now, model = self.clock(), self.model
        LINK_ITEMS[type(item)](model, item, now)
        reason = model.take_resync()
        if reason is not None:
            model.note(now, "link", f"reading the table again: {reason}")
            self.link.resync()
        if model.protocols is not self._shown_protocols:
            self.call_later(self._show_protocols)

    async def _show_protocols(self) -> None:
        """The router described other protocols: their keys, then their switches (the VPN pane follows the
        model)."""
        protocols = self.model.protocols
        if protocols is self._shown_protocols:
            return
        self._shown_protocols = protocols
        notes = self.bind_protocol_keys(protocols)
        for text in notes:
            self.model.note(self.clock(), "link", text)
        keys = {k.protocol.name: k.key for k in self.protocol_keys if k.kind == SWITCH}
        await self.switch_bar.set_protocols(protocols, keys)
        self.refresh_view(force=True)

    def _hold(self, item) -> None:
        """Paused: keep what comes, in order, for the resume; past MAX_HELD let events go (a gap: resync)."""
        if isinstance(item, Events):
            self._held_events += len(item.events)
            if self._held_events > MAX_HELD:
                return
        elif isinstance(item, Status) and self._held and isinstance(self._held[-1], Status):
            self._held[-1] = item
            return
        self._held.append(item)

    # -- the screen update ------------------------------------------------------------------------

    def refresh_view(self, force: bool = False) -> None:
        """Hand the model's changes to the widgets (a few times a second, and at once after a key).

        Nothing changed and the same second (ages and idles show seconds): nothing to do.
        """
        started = time.perf_counter()
        now, model = self.clock(), self.model
        self._update_header(now)
        if self.paused and not force:         # paused: the model holds still, the user may still sort
            return
        second = int(now)
        if model.status is not self._shown_status:
            self._shown_status = model.status
            self.rates_panel.update_view(model.rates)
            self._update_titles()
        if not force and model.version == self._shown_version and second == self._shown_second:
            return
        self._shown_version, self._shown_second = model.version, second
        changes = model.take_changes()
        nat = self.nat_table
        if self.nat_view.update(model.sessions, changes, now):
            nat.set_rows(self.nat_view.rows)
        else:
            nat.refresh()
        vpn = self.vpn_table
        if changes.reset or changes.added or changes.removed:
            rows: list = []
            for name in model.protocols:
                rows.append(name)
                rows.extend(sorted(model.flow_ids.get(name, ())))
            for name, ids in model.recognised_groups():
                rows.append((RECOGNISED, name))
                rows.extend(sorted(ids))
            vpn.set_rows(rows)
        else:
            vpn.refresh()
        self._update_titles()
        entries = model.take_log()
        if entries:
            self.event_log.add(entries)
        if isinstance(self.screen, DetailsScreen):
            self.screen.update_view(model.sessions.get(self.screen.session_id), now)
        self.update_times.append(time.perf_counter() - started)

    def _update_header(self, now: float) -> None:
        model = self.model
        wan = model.wan
        self.header.update_view(
            socket=self.socket_path, connected=model.connected, detail=model.link_detail,
            uptime=fmt.uptime(model.router_uptime(now)), sessions=model.nat_count if model.synced else None,
            flows=sum(model.flow_counts.values()), paused=self.paused, path=model.dataplane_path,
            wan=fmt.wan_brief(wan) if model.connected else None)
        note = fmt.passthrough_note(wan) if model.connected else None
        self.switch_bar.update_view({name: model.switch_mode(name) for name in model.protocols}, model.holders,
                                    model.pending, model.flow_counts, effective=note is None)
        self.passthrough_note.update_view(note if model.protocols else None)

    def _update_titles(self) -> None:
        """The panes' titles: what the NAT table shows and the NAT behaviour; the access rules in brief."""
        view, model = self.nat_view, self.model
        title = f"NAT sessions {len(view.rows):,} of {model.nat_count:,}"
        title += f"  sort {view.sort} {'▼' if view.reverse else '▲'}"
        if view.filter:
            title += f"  filter: {view.filter.text}"
        if model.nat is not None:
            title += f"  {fmt.nat_brief(model.nat)}"
        _set_title(self.nat_pane, title)
        rules = f"  {fmt.rules_brief(model.rules)} (r)" if model.rules is not None else ""
        _set_title(self.vpn_pane, f"VPN sessions{rules}")

    def _nat_cells(self, key: int):
        session = self.model.sessions.get(key)
        if session is None:
            return (str(key), "", "(closed)", "", "", "", "", "", "")
        return fmt.nat_cells(session, self.clock())

    def _vpn_cells(self, key):
        """A protocol's group title (its name as the key), a recognised protocol's (``(RECOGNISED, name)``), or
        one of their flows or sessions (until the next screen update, a row may still show a flow or a protocol
        that is gone)."""
        model = self.model
        protocols = model.protocols
        if isinstance(key, str):
            protocol = protocols.get(key)
            return key if protocol is None else fmt.vpn_title(protocol, len(model.flow_ids.get(key, ())))
        if isinstance(key, tuple):
            name = key[1]
            return fmt.recognised_title(name, model.recognisers.get(name), len(model.recognised_ids.get(name, ())))
        session = model.sessions.get(key)
        if session is not None and session.recognised and not session.flow:
            return fmt.recognised_cells(session, self.clock())
        protocol = protocols.get(session.vpn) if session is not None else None
        if protocol is None:
            return (str(key), "", "", "(closed)", "", "", "", "", "", "")
        return fmt.vpn_cells(session, self.clock(), protocol)

    # -- selection --------------------------------------------------------------------------------

    def on_descendant_focus(self, event) -> None:
        if isinstance(event.widget, KeyedTable):
            self._active_table = event.widget

    def selected(self) -> Session | None:
        """The session under the cursor of the focused table (or of the table focused last)."""
        table = self._active_table or self.nat_table
        key = table.cursor_key
        session = self.model.sessions.get(key) if isinstance(key, int) else None
        if session is None:
            self.notify("no session selected", severity="warning")
        return session

    # -- keys that change the view (the others: ``keys.KeysMixin``) ----------------------------------

    def action_filter(self) -> None:
        bar = self.filter_bar
        bar.add_class("-visible")
        bar.input.focus()

    def action_clear_filter(self) -> None:
        bar = self.filter_bar
        bar.input.value = ""
        bar.remove_class("-visible")
        self._set_filter("")
        self.nat_table.focus()

    @on(Input.Changed, "#filter-input")
    def _filter_changed(self, event: Input.Changed) -> None:
        self._set_filter(event.value)

    @on(Input.Submitted, "#filter-input")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        if not event.value.strip():
            self.filter_bar.remove_class("-visible")
        self.nat_table.focus()

    def _set_filter(self, text: str) -> None:
        bar = self.filter_bar
        try:
            self.nat_view.set_filter(text)
        except FilterError as exc:
            bar.show_note(str(exc), error=True)
            return
        self.refresh_view(force=True)
        bar.show_note(f"{len(self.nat_view.rows):,} match" if text.strip() else "")

    def action_sort(self, step: int) -> None:
        view = self.nat_view
        if step < 0:
            view.set_sort(view.sort, not view.reverse)
        else:
            view.set_sort(SORT_ORDER[(SORT_ORDER.index(view.sort) + 1) % len(SORT_ORDER)], False)
        self.nat_table.set_sort(view.sort, view.reverse)
        self.refresh_view(force=True)

    @on(KeyedTable.HeaderClicked, "#nat")
    def _header_clicked(self, event: KeyedTable.HeaderClicked) -> None:
        if event.column in SORT_KEYS:
            self.nat_view.set_sort(event.column)
            self.nat_table.set_sort(self.nat_view.sort, self.nat_view.reverse)
            self.refresh_view(force=True)

    def action_pause(self) -> None:
        self.paused = not self.paused
        if not self.paused:
            held, self._held = self._held, []
            lost, self._held_events = self._held_events > MAX_HELD, 0
            for item in held:
                self._apply(item)
            if lost:
                self.model.note(self.clock(), "link", "events let go while paused: reading the table again")
                self.link.resync()
        self.refresh_view(force=True)


LINK_ITEMS = {
    Events: lambda model, item, now: model.apply_events(item.events, now),
    Status: lambda model, item, now: model.apply_status(item.status, now),
    Snapshot: lambda model, item, now: model.load_snapshot(item.sessions, now),
    Subscribed: lambda model, item, now: model.subscribed(item.seq, now),
    LinkUp: lambda model, item, now: model.link_up(now),
    LinkDown: lambda model, item, now: model.link_down(item.reason, now),
    Described: lambda model, item, now: model.describe(item.helpers, now, item.recognisers),
    Dropped: lambda model, item, now: model.note(now, "error", f"the router dropped this dashboard: {item.reason}"),
}
"""What each thing the link says does to the model."""


def _set_title(pane, title: str) -> None:
    if pane.border_title != title:
        pane.border_title = title


def run(socket_path: str = schema.DEFAULT_SOCKET) -> int:
    """Run the dashboard until q; the exit status for ``vpnrouter tui``."""
    app = DashboardApp(socket_path)
    result = app.run()
    return result if isinstance(result, int) else (app.return_code or 0)
