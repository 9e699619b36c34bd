"""Fixtures shared by every suite: a clean event loop per test and no task left behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest


@pytest.fixture(autouse=True)
async def no_task_left_behind() -> AsyncIterator[None]:
    """Fail any test that leaves an asyncio task running after it ends."""
    before = asyncio.all_tasks()
    yield
    await asyncio.sleep(0)
    leftover = [t for t in asyncio.all_tasks() - before if not t.done() and t is not asyncio.current_task()]
    for task in leftover:
        task.cancel()
    assert not leftover, f"tasks left running: {[t.get_name() for t in leftover]}"
