"""How the dashboard holds up: the real app, headless, against the fake router with a big table and many events.

``run_bench()`` starts the fake router of the dashboard's tests
(``tests/tui/fake_router.py``, in a thread of this process, on a Unix socket in
a temporary directory) with ``sessions`` NAT sessions, runs the app headless,
lets it load the table, then has the fake make ``events_per_second`` events
(sessions opened and closed, drops) plus a ``sessions_updated`` of
``updated_per_batch`` sessions twice a second, for ``seconds``.  Meanwhile a key (down) is pressed every half second
and the time until the cursor moved is taken.  It returns a dict:

    snapshot_seconds         connect, subscribe and load the table
    update_ms                model -> widgets, per screen update: mean, p95, max
    render_ms                widgets -> terminal (Textual's compositor), per frame: mean, p95, max
    screen_updates           how many screen updates ran in the measured time
    events_offered_per_second, events_per_second   made by the fake, applied by the dashboard
    lag_events               events made but not yet applied at the end
    keeps_up                 applied at least 95% of what was made and the lag is under a second of events
    key_ms                   key press to cursor moved: mean, max

Run from the repository: ``python -m tests.perf.dashboard [--sessions N] [--rate R] [--seconds S]`` or call
``run_bench()`` (``make bench``, through ``tests/perf/bench.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time

from textual import events

from tests.tui.fake_router import FakeRouter
from tests.tui.samples import nat_session
from tui.app import DashboardApp


def run_bench(sessions: int = 10_000, events_per_second: float = 500.0, seconds: float = 10.0,
              updated_per_batch: int = 1000, size: tuple[int, int] = (120, 40)) -> dict:
    return asyncio.run(_bench(sessions, events_per_second, seconds, updated_per_batch, size))


async def _bench(sessions: int, rate: float, seconds: float, per_batch: int, size: tuple[int, int]) -> dict:
    with tempfile.TemporaryDirectory(prefix="vpnrouter-tui-bench-") as tmp:
        path = os.path.join(tmp, "ctl.sock")
        with FakeRouter(path, [nat_session(i) for i in range(1, sessions + 1)]) as fake:
            app = DashboardApp(path)
            async with app.run_test(size=size) as pilot:
                started = time.perf_counter()
                while not app.model.synced:
                    await asyncio.sleep(0.01)
                snapshot_seconds = time.perf_counter() - started
                await pilot.pause(0.5)
                renders = _time_renders(app)
                app.update_times.clear()
                applied0, seq0, t0 = app.model.events_applied, fake.seq, time.perf_counter()
                fake.start_load(rate, per_batch)
                keys = []
                while time.perf_counter() - t0 < seconds:
                    keys.append(await _key_latency(app))
                    await asyncio.sleep(0.5)
                fake.stop_load()
                elapsed = time.perf_counter() - t0
                offered = fake.seq - seq0
                applied = app.model.events_applied - applied0
                lag = fake.seq - (app.model.expected or 0)
    updates = [t * 1000 for t in app.update_times]
    return {
        "sessions": sessions, "seconds": round(elapsed, 2), "snapshot_seconds": round(snapshot_seconds, 3),
        "update_ms": _summary(updates), "render_ms": _summary(renders), "screen_updates": len(updates),
        "events_offered_per_second": round(offered / elapsed, 1), "events_per_second": round(applied / elapsed, 1),
        "lag_events": lag, "keeps_up": applied >= 0.95 * offered and lag <= max(rate, 1),
        "key_ms": {"mean": round(statistics.fmean(keys), 2), "max": round(max(keys), 2)} if keys else None,
    }


def _time_renders(app: DashboardApp) -> list[float]:
    """Wrap the screen's compositor refresh to record how long each frame takes (ms)."""
    screen, times = app.screen, []
    original = screen._compositor_refresh

    def timed() -> None:
        start = time.perf_counter()
        original()
        times.append((time.perf_counter() - start) * 1000)

    screen._compositor_refresh = timed
    return times


async def _key_latency(app: DashboardApp) -> float:
    """Press down (or up at the end) as a terminal would, and wait for the cursor to move (ms)."""
    table = app.nat_table
    before = table.cursor_index
    key = "down" if before < len(table.rows) - 1 else "up"
    start = time.perf_counter()
    app._driver.send_message(events.Key(key, None))
    while table.cursor_index == before and time.perf_counter() - start < 5.0:
        await asyncio.sleep(0.0005)
    return (time.perf_counter() - start) * 1000


def _summary(values: list[float]) -> dict | None:
    if not values:
        return None
    ordered = sorted(values)
    return {"mean": round(statistics.fmean(values), 2), "p95": round(ordered[int(0.95 * (len(ordered) - 1))], 2),
            "max": round(ordered[-1], 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.perf.dashboard", description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=500.0, help="events per second (default 500)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--updated", type=int, default=1000, help="sessions per sessions_updated (default 1000)")
    args = parser.parse_args(argv)
    print(json.dumps(run_bench(args.sessions, args.rate, args.seconds, args.updated), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
