"""Fixtures shared by every suite: no asyncio task may outlive the test that started it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

# Libraries finish some work of their own after a test's last await (SQLAlchemy closes a connection
# whose user was cancelled, for one); a task that still runs after this long was left behind.
GRACE_SECONDS = 2.0


@pytest.fixture(autouse=True)
async def no_task_left_behind() -> AsyncIterator[None]:
    """Fail any test that leaves an asyncio task running after it ends."""
    before = asyncio.all_tasks()
    yield
    current = asyncio.current_task()
    pending = [t for t in asyncio.all_tasks() - before if not t.done() and t is not current]
    if pending:
        await asyncio.wait(pending, timeout=GRACE_SECONDS)
    leftover = [t for t in pending if not t.done()]
    for task in leftover:
        task.cancel()
    assert not leftover, f"tasks left running: {[t.get_name() for t in leftover]}"
