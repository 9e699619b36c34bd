"""Frozen value types shared by the service, the providers and the API."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime


class PreviewState(enum.StrEnum):
    PROVISIONING = "provisioning"  # row written, machine being made
    BOOTING = "booting"  # machine up, dev server not serving yet
    READY = "ready"
    SUSPENDED = "suspended"  # idle: its machine suspended (frozen), resumed by the next request
    STOPPING = "stopping"
    STOPPED = "stopped"  # terminal
    FAILED = "failed"  # terminal, with a reason and the last log lines


TERMINAL_STATES = frozenset({PreviewState.STOPPED, PreviewState.FAILED})
LIVE_STATES = frozenset(set(PreviewState) - TERMINAL_STATES)


class MachineState(enum.StrEnum):
    """Fly's machine states; the local provider maps its sandboxes onto the same words."""

    CREATED = "created"
    STARTING = "starting"
    STARTED = "started"
    STOPPING = "stopping"
    STOPPED = "stopped"
    SUSPENDING = "suspending"
    SUSPENDED = "suspended"
    DESTROYING = "destroying"
    DESTROYED = "destroyed"
    FAILED = "failed"

    @property
    def is_gone(self) -> bool:
        return self in (MachineState.DESTROYING, MachineState.DESTROYED)


@dataclass(frozen=True, slots=True)
class MachineSpec:
    """What a preview needs from a machine; each provider turns it into its own request."""

    image: str
    memory_mb: int
    cpus: int
    cpu_kind: str
    internal_port: int
    env: Mapping[str, str]
    metadata: Mapping[str, str]
    region: str | None = None
    # What the machine may write (its workspace), MiB; the local provider enforces it, Fly's rootfs
    # is the machine's own.
    disk_mb: int = 2048
    # Machines with the same key may start from the same installed dependencies (same owner, same
    # package.json and lockfile); a provider without such a cache ignores it.
    cache_key: str | None = None


@dataclass(frozen=True, slots=True)
class Machine:
    id: str
    state: MachineState
    metadata: Mapping[str, str]
    created_at: datetime
    region: str = "local"
    private_ip: str | None = None
    # Why the machine stopped, when it stopped on its own (exit status, out of memory...).
    exit_reason: str | None = None
    # When it last changed state (``None``: not known, count from ``created_at``).
    updated_at: datetime | None = None

    @property
    def in_state_since(self) -> datetime:
        return self.updated_at or self.created_at


@dataclass(frozen=True, slots=True)
class Preview:
    id: str
    user_id: str
    project_id: str
    state: PreviewState
    created_at: datetime
    updated_at: datetime
    last_activity_at: datetime
    expires_at: datetime
    machine_id: str | None = None
    ready_at: datetime | None = None
    failure_reason: str | None = None
    # The last log lines of an ended preview: why a failed one failed, how a stopped one ended.
    failure_logs: tuple[str, ...] = field(default_factory=tuple)
    # The orchestrator replica whose tasks launch and watch it (its instance id).
    owner: str | None = None

    @property
    def is_live(self) -> bool:
        return self.state in LIVE_STATES


class PoolState(enum.StrEnum):
    PROVISIONING = "provisioning"  # row written, machine being made
    BOOTING = "booting"  # machine up, the template's dev server not serving yet
    READY = "ready"  # claimable
    CLAIMED = "claimed"  # taken by a preview, until the preview records the machine as its own


@dataclass(frozen=True, slots=True)
class PooledMachine:
    """A warm-pool machine: booted ahead of any preview with the pool's template, claimed once."""

    key: str
    state: PoolState
    instance: str  # the replica that made it
    created_at: datetime
    updated_at: datetime
    machine_id: str | None = None
    region: str | None = None
    preview_id: str | None = None  # the preview that claimed it


@dataclass(frozen=True, slots=True)
class Project:
    """A project whose snapshot the orchestrator serves to agents (locally it holds the files)."""

    id: str
    owner_id: str
    name: str
    file_count: int
    size_bytes: int
    created_at: datetime
    updated_at: datetime
    public: bool = False  # its previews need no sign-in


@dataclass(frozen=True, slots=True)
class PreviewEvent:
    """One line of a preview's history: a state it entered, or a step it reported."""

    preview_id: str
    at: datetime
    state: PreviewState
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One attempt to deliver a preview event as a webhook."""

    event_id: int
    preview_id: str
    kind: str  # preview.created, preview.ready...
    attempt: int
    at: datetime
    delivered: bool
    final: bool  # the last attempt: delivered, or given up on
    status_code: int | None = None
    error: str | None = None
