"""Driving the dashboard in tests: make it, wait for it, read its screen."""

from __future__ import annotations

import time

from tui.app import DashboardApp

FROZEN = 1000.0
"""The dashboard's clock in tests: ages and idles show what the router said."""
WALL = 1_700_000_000.0


def make_app(sock: str, **kwargs) -> DashboardApp:
    kwargs.setdefault("clock", lambda: FROZEN)
    kwargs.setdefault("wallclock", lambda: WALL)
    kwargs.setdefault("refresh_interval", 0.05)
    kwargs.setdefault("status_interval", 0.5)
    return DashboardApp(sock, **kwargs)


async def wait_for(pilot, predicate, timeout: float = 5.0, what: str = "") -> None:
    """Let the app run until ``predicate()`` holds (then one more screen update)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await pilot.pause(0.02)
    pilot.app.refresh_view()
    await pilot.pause()


async def synced(pilot) -> None:
    await wait_for(pilot, lambda: pilot.app.model.synced, what="the first snapshot")


def screen_text(app) -> str:
    """What the terminal shows, as text."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def notifications(app) -> list[str]:
    return [n.message for n in app._notifications]


def requests(fake, method: str) -> list[list]:
    return [params for m, params in list(fake.requests) if m == method]
