"""What can go wrong, by configuration: the failures a Fly client has to survive, on demand.

A ``Faults`` value is immutable and read from a JSON file or CLI flags; the emulator keeps the
counters (``FaultState``) that "the next N calls" rules consume. ``actions`` narrows the counted rules
to some calls (``create``, ``get``, ``wait``...; empty means every call).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from velocity.domain import ConfigError


@dataclass(frozen=True, slots=True)
class Faults:
    # Answer 429 the way Fly documents its limits (1 req/s per action per machine, burst 3; get 5/s, 10).
    enforce_rate_limits: bool = True
    rate_limit_scale: float = 1.0
    # The next N calls answer 429 with this Retry-After (seconds; None sends no header).
    throttle_next: int = 0
    retry_after: int | None = 1
    # The next N calls answer this 5xx.
    server_errors_next: int = 0
    server_error_status: int = 503
    # Every answer waits this long first.
    slow_seconds: float = 0.0
    # Creates in these regions answer 422 insufficient_capacity.
    full_regions: frozenset[str] = frozenset()
    # The next N creates happen, but their answer is lost (this status instead of 200).
    lost_creates_next: int = 0
    lost_create_status: int = 504
    # Machines of these images fail to boot.
    failing_images: frozenset[str] = frozenset()
    # Counted rules (throttle, server errors) apply only to these actions; empty means all.
    actions: frozenset[str] = frozenset()

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> Faults:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown fault settings {unknown}; known: {sorted(known)}")
        values: dict[str, Any] = {k: frozenset(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)

    @classmethod
    def from_file(cls, path: Path) -> Faults:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read faults from {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a JSON object of fault settings")
        return cls.from_mapping(data)


@dataclass(slots=True)
class FaultState:
    """The counters the ``*_next`` rules consume; replaced whenever the faults are."""

    faults: Faults = field(default_factory=Faults)
    throttled: int = 0
    server_errors: int = 0
    lost_creates: int = 0

    def applies(self, action: str) -> bool:
        return not self.faults.actions or action in self.faults.actions

    def take_throttle(self, action: str) -> bool:
        if self.applies(action) and self.throttled < self.faults.throttle_next:
            self.throttled += 1
            return True
        return False

    def take_server_error(self, action: str) -> bool:
        if self.applies(action) and self.server_errors < self.faults.server_errors_next:
            self.server_errors += 1
            return True
        return False

    def take_lost_create(self) -> bool:
        if self.lost_creates < self.faults.lost_creates_next:
            self.lost_creates += 1
            return True
        return False
