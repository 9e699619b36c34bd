"""Fixtures for the hub tests: hubs served by uvicorn on loopback, the node client, log checks."""

from __future__ import annotations

import logging
import shutil
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.realtime.hub_server import Served, StartHub, serve_hub
from tests.realtime.realtime_clients import JS_DIR


@pytest.fixture
async def start_hub() -> AsyncIterator[StartHub]:
    """Start hubs with given limits, clock or authorizer; stop them and their clients afterwards."""
    running: list[Served] = []

    async def start(**options: Any) -> Served:
        running.append(await serve_hub(**options))
        return running[-1]

    yield start
    for served in reversed(running):
        await served.stop()


@pytest.fixture
async def served(start_hub: StartHub) -> Served:
    return await start_hub()


@pytest.fixture(scope="session")
def node() -> str:
    """The JS client needs node and ``npm ci`` in tests/realtime/js; say how to get them if missing."""
    found = shutil.which("node")
    if found is None or not (JS_DIR / "node_modules" / "@supabase" / "realtime-js").is_dir():
        pytest.fail(
            "the JS client is not installed: run `npm ci --prefix tests/realtime/js` (part of `make setup`)"
        )
    return found


@pytest.fixture(autouse=True)
def python_client_accepts_every_frame(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """The Python client drops frames it cannot parse with only a log line: make that a failure."""
    caplog.set_level(logging.INFO)
    yield
    dropped = [r.getMessage() for r in caplog.records if "Unrecognized message format" in r.getMessage()]
    assert not dropped, f"the Python client rejected frames from the hub: {dropped}"
