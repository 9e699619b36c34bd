"""The provider protocol: a handful of async methods returning our own frozen types."""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from velocity.domain import Machine, MachineSpec, MachineState

# Metadata keys every machine we create carries; the reconciler finds ours by them.
META_PREVIEW_ID = "velocity_preview_id"
META_USER_ID = "user_id"
META_PROJECT_ID = "project_id"
META_INSTANCE = "velocity_instance"
META_CREATE_TAG = "velocity_create_tag"
META_OWNER = "velocity_owner"
# A warm-pool machine's pool key (``service.pool``); a claimed one gets a preview's keys besides.
META_POOL = "velocity_pool"
OWNER_VALUE = "velocity-previews"

# States that end a wait for ``stopped``: the machine no longer runs.
STOPPED_OR_BEYOND = frozenset(
    {MachineState.STOPPED, MachineState.FAILED, MachineState.DESTROYING, MachineState.DESTROYED}
)


@dataclass(frozen=True, slots=True)
class AgentEndpoint:
    """How the orchestrator reaches a machine's agent.

    ``uds`` is a unix socket path on this host (local sandboxes); otherwise ``base_url`` is dialled
    over TCP with ``headers`` added (Fly: the private network name, or ``fly-force-instance-id``).
    """

    base_url: str
    uds: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


class MachineProvider(Protocol):
    """What the service needs from a machine backend."""

    name: str

    async def create(self, spec: MachineSpec) -> Machine:
        """Create and start a machine; return as soon as it exists (state ``created``/``starting``)."""
        ...

    async def get(self, machine_id: str) -> Machine:
        """The machine's current state; ``NotFound`` when it never existed or is long gone."""
        ...

    async def list(self, *, metadata: Mapping[str, str] | None = None) -> builtins.list[Machine]:
        """Machines whose metadata contains every given key/value, destroyed ones excluded."""
        ...

    async def wait(self, machine_id: str, *, state: MachineState, timeout: float) -> Machine:
        """Block until the machine reaches ``state`` or ``timeout`` seconds pass (``Unavailable``).

        Waiting for ``stopped`` also ends when the machine fails or is destroyed: the caller wants to
        know that it no longer runs.
        """
        ...

    async def stop(self, machine_id: str, *, timeout: float = 10.0) -> None: ...

    async def suspend(self, machine_id: str) -> bool:
        """Suspend the running machine with its memory until ``resume``; False (nothing done) when
        this machine cannot be suspended, and the caller stops it instead."""
        ...

    async def resume(self, machine_id: str) -> None:
        """Run a suspended machine again, from its memory where the backend kept it (Fly may boot it
        afresh instead); returns once it runs."""
        ...

    async def assign(self, machine_id: str, metadata: Mapping[str, str]) -> None:
        """A warm-pool machine now serves a preview: add ``metadata`` (its preview, user and project)
        to the machine's own, so that listings and the reconciler know it as that preview's."""
        ...

    async def destroy(self, machine_id: str, *, force: bool = True) -> None:
        """Destroy the machine; destroying one that is already gone is not an error."""
        ...

    async def logs(self, machine_id: str, *, tail: int = 100) -> builtins.list[str]:
        """The last lines the machine printed, where the backend keeps them (empty if it does not)."""
        ...

    def endpoint(self, machine: Machine) -> AgentEndpoint: ...

    async def aclose(self) -> None: ...
