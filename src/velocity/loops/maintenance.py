"""One loop compares what should run with what runs, level-based, on every pass."""

from __future__ import annotations

import logging

from velocity.clock import Clock
from velocity.domain import PreviewError
from velocity.service import PreviewService

log = logging.getLogger(__name__)


async def maintenance_pass(service: PreviewService) -> list[str]:
    """Reconcile machines with previews, then reap what has run its course; returns what was done."""
    done = await service.reconcile()
    done += await service.reap()
    for line in done:
        log.info("maintenance: %s", line)
    return done


async def run_maintenance(service: PreviewService, clock: Clock, *, interval: float) -> None:
    while True:
        try:
            await maintenance_pass(service)
        except PreviewError as exc:
            # A provider or database hiccup: the next pass sees the same state and tries again.
            log.warning("maintenance pass failed: %s", exc)
        await clock.sleep(interval)
