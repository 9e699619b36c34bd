"""End-to-end fixtures: one warm npm cache for the session, a fresh orchestrator per test."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Live, live_orchestrator, modules_cache, warm_npm_cache
from velocity.providers.local import disks


@pytest.fixture(scope="session")
def npm_cache() -> Iterator[Path]:
    """The npm cache every end-to-end sandbox shares, filled once by building the example."""
    path = Path(tempfile.mkdtemp(prefix="vp-npm-"))
    warm_npm_cache(path)
    yield path
    disks.discard(path)  # with any user's npm cache a failed test left mounted
    shutil.rmtree(modules_cache(path), ignore_errors=True)


@pytest.fixture
async def live(npm_cache: Path) -> AsyncIterator[Live]:
    async with live_orchestrator(npm_cache=npm_cache) as orchestrator:
        yield orchestrator
