"""One loop compares what should run with what runs, level-based, on every pass; on the leader."""

from __future__ import annotations

import logging

from velocity import metrics
from velocity.clock import Clock
from velocity.domain import DatabaseUnavailable, ProviderError
from velocity.loops.health import LoopMonitor
from velocity.loops.replica import Replica
from velocity.service import PreviewService

log = logging.getLogger(__name__)


async def maintenance_pass(service: PreviewService) -> list[str]:
    """Reconcile machines with previews, then reap what has run its course; returns what was done."""
    done = await service.reconcile()
    done += await service.reap()
    for line in done:
        log.info("maintenance: %s", line)
    return done


async def run_maintenance(
    service: PreviewService, clock: Clock, replica: Replica, monitor: LoopMonitor, *, interval: float
) -> None:
    """A pass every ``interval`` while this replica leads, and one within a heartbeat of its coming
    to lead.

    The provider's and the database's failures are the world's, not this process's: the pass is
    reported failing on ``/healthz`` and tried again next interval (a restart would not help a
    revoked token, and would take the API down with it). Anything else is a bug, and ends the
    process, whose supervisor starts it again, rather than leave it serving with no reaper.
    """
    health = monitor.loop("maintenance", interval)
    while True:
        if replica.leader:
            try:
                with metrics.MAINTENANCE_PASS.time():
                    await maintenance_pass(service)
                health.succeeded(clock.now())
            except (ProviderError, DatabaseUnavailable) as exc:
                metrics.MAINTENANCE_FAILURES.inc()
                health.failed(exc.message)
                log.warning("maintenance pass failed, trying again in %g s: %s", interval, exc.message)
        else:
            health.standing_by()
        # Standing by, it looks again each heartbeat, so a new leader's first pass comes soon.
        await clock.sleep(interval if replica.leader else replica.period)
