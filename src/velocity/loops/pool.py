"""The warm pool's refill, on the leader: at once after a claim, and every few seconds besides."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from velocity.clock import Clock
from velocity.domain import LIVE_STATES, DatabaseUnavailable, ProviderError
from velocity.loops.health import LoopMonitor
from velocity.loops.replica import Replica
from velocity.service.pool import WarmPool
from velocity.store import Store

log = logging.getLogger(__name__)

# How often the leader looks at the pool when no claim wakes it (another replica's claims, boots that
# failed and wait out their back-off).
CHECK_SECONDS = 2.0


async def run_pool(
    pool: WarmPool, store: Store, clock: Clock, replica: Replica, monitor: LoopMonitor
) -> None:
    """Refill while this replica leads. As with maintenance, the provider's and the database's
    failures are reported on ``/healthz`` and tried again; anything else ends the process."""
    health = monitor.loop("pool", CHECK_SECONDS)
    while True:
        pool.wanted.clear()
        if replica.leader:
            try:
                counts = await store.count_previews()
                machines = sum(count for state, count in counts.items() if state in LIVE_STATES)
                for line in await pool.refill(machines=machines):
                    log.info("pool: %s", line)
                health.succeeded(clock.now())
            except (ProviderError, DatabaseUnavailable) as exc:
                health.failed(exc.message)
                log.warning("pool refill failed, trying again: %s", exc.message)
        else:
            health.standing_by()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CHECK_SECONDS if replica.leader else replica.period):
                await pool.wanted.wait()
