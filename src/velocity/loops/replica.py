"""One replica among several on one database: it beats, and it leads while it holds the lease.

Every replica serves the API and the router; the maintenance loops run on the leader alone. The
leader renews its lease three times an interval (``CONTAINER_CLEANUP_INTERVAL_MINUTES``) for two
thirds of one, so a leader that dies is replaced within one interval by the first replica to find
the lease expired. A replica that stops cleanly gives up the lease and leaves at once.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from velocity import metrics
from velocity.clock import Clock
from velocity.domain import DatabaseUnavailable
from velocity.loops.health import LoopMonitor
from velocity.store import Store

log = logging.getLogger(__name__)

MAINTENANCE_LEASE = "maintenance"


class Replica:
    def __init__(self, store: Store, clock: Clock, monitor: LoopMonitor, *, interval: float) -> None:
        self._store = store
        self._clock = clock
        self._monitor = monitor
        self.period = interval / 3
        self._ttl = timedelta(seconds=interval * 2 / 3)

    @property
    def instance(self) -> str:
        return self._monitor.instance

    @property
    def leader(self) -> bool:
        return self._monitor.leader

    async def beat(self) -> bool:
        """Say this replica is alive, and take or keep the lease; True while it leads."""
        now = self._clock.now()
        await self._store.beat(self.instance, now)
        leads = await self._store.hold_lease(MAINTENANCE_LEASE, self.instance, now=now, ttl=self._ttl)
        if leads and not self._monitor.leader:
            log.info("replica %s leads: it runs the maintenance loops", self.instance)
        elif not leads and self._monitor.leader:
            log.warning("replica %s no longer leads: another replica holds the lease", self.instance)
        self._monitor.leader = leads
        metrics.LEADER.set(1 if leads else 0)
        return leads

    async def run(self) -> None:
        health = self._monitor.loop("replica", self.period)
        while True:
            try:
                await self.beat()
                health.succeeded(self._clock.now())
            except DatabaseUnavailable as exc:
                # Without the database this replica cannot know it still leads: it stops leading.
                self._monitor.leader = False
                metrics.LEADER.set(0)
                health.failed(exc.message)
                log.warning("replica heartbeat failed: %s", exc.message)
            await self._clock.sleep(self.period)

    async def leave(self) -> None:
        self._monitor.leader = False
        await self._store.forget_instance(self.instance)
