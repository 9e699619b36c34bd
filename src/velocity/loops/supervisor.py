"""Run named loops together; when one ends or fails, the others are cancelled and the error raised."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping
from typing import Any


async def supervise(loops: Mapping[str, Coroutine[Any, Any, None]]) -> None:
    tasks = [asyncio.create_task(coro, name=name) for name, coro in loops.items()]
    try:
        done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # re-raise the failure of the loop that ended
        raise RuntimeError(f"loop {next(iter(done)).get_name()} ended unexpectedly")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
