"""What each loop last did, for ``/healthz``: when it last finished a pass, and what stops it now."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime

from velocity.clock import Clock


@dataclass
class LoopHealth:
    name: str
    interval: float
    state: str = "starting"  # starting | ok | failing | standby (another replica leads)
    last_success_at: datetime | None = None
    last_error: str | None = None
    failures: int = 0  # in a row
    passed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)  # once it has

    def succeeded(self, at: datetime) -> None:
        self.state, self.last_success_at, self.last_error, self.failures = "ok", at, None, 0
        self.passed.set()

    def failed(self, error: str) -> None:
        self.state, self.last_error, self.failures = "failing", error, self.failures + 1

    def standing_by(self) -> None:
        self.state, self.last_error, self.failures = "standby", None, 0


class LoopMonitor:
    """The loops of one replica, and whether it leads."""

    def __init__(self, clock: Clock, instance: str) -> None:
        self._clock = clock
        self.instance = instance
        self.leader = False
        self.loops: dict[str, LoopHealth] = {}

    def loop(self, name: str, interval: float) -> LoopHealth:
        health = self.loops.setdefault(name, LoopHealth(name, interval))
        health.interval = interval
        return health

    async def first_pass(self, name: str) -> None:
        """Until the loop ``name`` has once passed."""
        await self.loops.setdefault(name, LoopHealth(name, 0.0)).passed.wait()

    def healthy(self) -> bool:
        """No loop failing, and none silent for more than three of its intervals."""
        now = self._clock.now()
        for loop in self.loops.values():
            last = loop.last_success_at
            silent = last is not None and (now - last).total_seconds() > 3 * loop.interval
            if loop.state == "failing" or (loop.state == "ok" and silent):
                return False
        return True
