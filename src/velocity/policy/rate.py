"""A token bucket per key: how many creates a user may make in a burst, and how fast it refills."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass
class TokenBuckets:
    per_minute: float
    burst: int
    _state: dict[str, tuple[float, datetime]] = field(default_factory=dict)

    def take(self, key: str, now: datetime) -> float | None:
        """Spend one token: ``None`` when allowed, else the seconds until one is back."""
        tokens, last = self._state.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last).total_seconds() * self.per_minute / 60.0)
        if tokens >= 1.0:
            self._state[key] = (tokens - 1.0, now)
            return None
        self._state[key] = (tokens, now)
        return (1.0 - tokens) * 60.0 / self.per_minute
