"""Background tasks the service starts (launches, watches), tracked so none is ever lost."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class TaskSet:
    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, key: str, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` under ``key``; a task already running under that key is left alone."""
        if key in self._tasks:
            coro.close()
            return
        task = asyncio.create_task(coro, name=key)
        self._tasks[key] = task
        task.add_done_callback(lambda t: self._done(key, t))

    def running(self, key: str) -> bool:
        return key in self._tasks

    def cancel(self, key: str) -> None:
        # The task stays tracked until it has finished cancelling, so ``close`` still awaits it.
        task = self._tasks.get(key)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def _done(self, key: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", key, exc_info=task.exception())

    async def finish(self, prefix: str) -> None:
        """Let the tasks whose key starts with ``prefix`` run to their end (short writes, say)."""
        tasks = [t for k, t in self._tasks.items() if k.startswith(prefix)]
        await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
