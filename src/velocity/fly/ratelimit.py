"""Token buckets per (action, machine), with Fly's documented rates and an injected clock.

Fly limits the Machines API "per action, per machine" (or per app for app-wide actions): 1 request/s
with bursts of 3, and 5/s with bursts of 10 for getting a machine. The client reserves a token before
every call and sleeps until its turn, so a burst of previews queues here instead of turning into a
storm of 429s; the emulator uses the same buckets to answer 429 the way Fly would.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from velocity.clock import Clock, SystemClock


@dataclass(frozen=True, slots=True)
class Rate:
    per_second: float
    burst: int

    def scaled(self, factor: float) -> Rate:
        return Rate(self.per_second * factor, self.burst)


DEFAULT_RATE = Rate(1.0, 3)
FLY_RATES: Mapping[str, Rate] = {"get": Rate(5.0, 10)}
# No pacing at all: for an emulator that enforces no limits.
UNLIMITED = Rate(1e9, 1_000_000_000)

# Buckets that have refilled are indistinguishable from new ones; dropping them keeps memory flat.
_PRUNE_ABOVE = 4096


class _Bucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: datetime) -> None:
        self.tokens = tokens
        self.updated = updated


class RateLimiter:
    """Per-(action, key) token buckets; ``key`` is a machine id, or the app name for app-wide actions."""

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        rates: Mapping[str, Rate] = FLY_RATES,
        default: Rate = DEFAULT_RATE,
        scale: float = 1.0,
    ) -> None:
        self._clock = clock or SystemClock()
        self._rates = {action: rate.scaled(scale) for action, rate in rates.items()}
        self._default = default.scaled(scale)
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    def rate(self, action: str) -> Rate:
        return self._rates.get(action, self._default)

    def _refilled(self, action: str, key: str) -> _Bucket:
        rate = self.rate(action)
        now = self._clock.now()
        bucket = self._buckets.get((action, key))
        if bucket is None:
            if len(self._buckets) > _PRUNE_ABOVE:
                self._prune(now)
            bucket = self._buckets[(action, key)] = _Bucket(float(rate.burst), now)
            return bucket
        elapsed = (now - bucket.updated).total_seconds()
        bucket.tokens = min(float(rate.burst), bucket.tokens + elapsed * rate.per_second)
        bucket.updated = now
        return bucket

    def reserve(self, action: str, key: str) -> float:
        """Take a token, going into debt if none is left; return how long to wait before using it.

        Reserving (rather than polling) queues concurrent callers in arrival order.
        """
        bucket = self._refilled(action, key)
        bucket.tokens -= 1.0
        if bucket.tokens >= 0:
            return 0.0
        return -bucket.tokens / self.rate(action).per_second

    async def acquire(self, action: str, key: str) -> float:
        """Wait for a token; return the seconds waited."""
        delay = self.reserve(action, key)
        if delay > 0:
            await self._clock.sleep(delay)
        return delay

    def try_take(self, action: str, key: str) -> float | None:
        """Take a token if one is there (``None``); otherwise the seconds until one will be."""
        bucket = self._refilled(action, key)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return (1.0 - bucket.tokens) / self.rate(action).per_second

    def _prune(self, now: datetime) -> None:
        full = [
            key
            for key, bucket in self._buckets.items()
            if bucket.tokens + (now - bucket.updated).total_seconds() * self.rate(key[0]).per_second
            >= self.rate(key[0]).burst
        ]
        for key in full:
            del self._buckets[key]
