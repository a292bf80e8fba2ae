"""Dashboard tests: ``async def`` tests run in a fresh event loop (no plugin needed), a fake router per test."""

from __future__ import annotations

import asyncio
import inspect

import pytest

from .fake_router import FakeRouter
from .samples import demo_table

TEST_TIMEOUT = 60.0


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
        asyncio.run(asyncio.wait_for(pyfuncitem.obj(**args), TEST_TIMEOUT))
        return True
    return None


@pytest.fixture
def sock(tmp_path) -> str:
    return str(tmp_path / "ctl.sock")


@pytest.fixture
def fake(sock):
    with FakeRouter(sock, demo_table()) as router:
        yield router
