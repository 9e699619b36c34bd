"""An in-memory provider for service and loop tests: machines are records, nothing runs."""

from __future__ import annotations

import asyncio
import builtins
import itertools
from collections.abc import Mapping
from dataclasses import replace

from velocity.clock import Clock, SystemClock
from velocity.domain import Machine, MachineSpec, MachineState, NotFound, ProviderError, Unavailable
from velocity.providers.base import STOPPED_OR_BEYOND, AgentEndpoint


class FakeProvider:
    """Machines start at once unless ``hold_start`` is set; failures are queued with ``fail_next_create``."""

    name = "fake"

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        self._machines: dict[str, Machine] = {}
        self._ids = itertools.count(1)
        self._changed = asyncio.Condition()
        self._create_failures: list[ProviderError] = []
        self.specs: dict[str, MachineSpec] = {}
        self.calls: list[tuple[str, str]] = []
        self.hold_start = False
        # As Fly's API can for a moment after a create: this many ``get`` calls answer 404 first.
        self.unseen_gets_after_create = 0
        self.created = asyncio.Event()  # set by the first create
        self._unseen: dict[str, int] = {}

    # --- test controls ---------------------------------------------------------------------------
    def fail_next_create(self, error: ProviderError) -> None:
        self._create_failures.append(error)

    async def set_state(
        self, machine_id: str, state: MachineState, *, exit_reason: str | None = None
    ) -> None:
        """Move a machine as the backend would on its own (it crashed, it finished starting...)."""
        async with self._changed:
            self._machines[machine_id] = replace(
                self._machines[machine_id], state=state, exit_reason=exit_reason, updated_at=self._clock.now()
            )
            self._changed.notify_all()

    def vanish(self, machine_id: str) -> None:
        """The machine disappears behind our back, as when someone destroys it by hand."""
        del self._machines[machine_id]

    # --- MachineProvider -------------------------------------------------------------------------
    async def create(self, spec: MachineSpec) -> Machine:
        self.calls.append(("create", ""))
        if self._create_failures:
            raise self._create_failures.pop(0)
        machine_id = f"fake{next(self._ids):04d}"
        state = MachineState.STARTING if self.hold_start else MachineState.STARTED
        machine = Machine(
            id=machine_id, state=state, metadata=dict(spec.metadata), created_at=self._clock.now()
        )
        self._machines[machine_id] = machine
        self.specs[machine_id] = spec
        self._unseen[machine_id] = self.unseen_gets_after_create
        self.created.set()
        return machine

    async def get(self, machine_id: str) -> Machine:
        self.calls.append(("get", machine_id))
        if self._unseen.get(machine_id, 0) > 0:
            self._unseen[machine_id] -= 1
            raise NotFound(f"machine {machine_id} not found")
        try:
            return self._machines[machine_id]
        except KeyError:
            raise NotFound(f"machine {machine_id} not found") from None

    async def list(self, *, metadata: Mapping[str, str] | None = None) -> builtins.list[Machine]:
        self.calls.append(("list", ""))
        wanted = dict(metadata or {})
        return [
            m
            for m in self._machines.values()
            if m.state != MachineState.DESTROYED and all(m.metadata.get(k) == v for k, v in wanted.items())
        ]

    async def wait(self, machine_id: str, *, state: MachineState, timeout: float) -> Machine:
        self.calls.append(("wait", machine_id))
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: self._reached(machine_id, state))
        except TimeoutError:
            raise Unavailable(f"machine {machine_id} did not reach {state} in {timeout}s") from None
        return await self.get(machine_id)

    def _reached(self, machine_id: str, state: MachineState) -> bool:
        machine = self._machines.get(machine_id)
        if machine is None or machine.state == state:
            return True
        return state == MachineState.STOPPED and machine.state in STOPPED_OR_BEYOND

    async def logs(self, machine_id: str, *, tail: int = 100) -> builtins.list[str]:
        return [f"fake machine {machine_id}"][-tail:]

    async def stop(self, machine_id: str, *, timeout: float = 10.0) -> None:
        self.calls.append(("stop", machine_id))
        await self.get(machine_id)
        await self.set_state(machine_id, MachineState.STOPPED)

    async def suspend(self, machine_id: str) -> bool:
        self.calls.append(("suspend", machine_id))
        await self.get(machine_id)
        await self.set_state(machine_id, MachineState.SUSPENDED)
        return True

    async def resume(self, machine_id: str) -> None:
        self.calls.append(("resume", machine_id))
        await self.get(machine_id)
        await self.set_state(machine_id, MachineState.STARTED)

    async def assign(self, machine_id: str, metadata: Mapping[str, str]) -> None:
        self.calls.append(("assign", machine_id))
        machine = await self.get(machine_id)
        self._machines[machine_id] = replace(machine, metadata={**machine.metadata, **metadata})

    async def destroy(self, machine_id: str, *, force: bool = True) -> None:
        self.calls.append(("destroy", machine_id))
        if machine_id in self._machines:
            await self.set_state(machine_id, MachineState.DESTROYED)

    def endpoint(self, machine: Machine) -> AgentEndpoint:
        return AgentEndpoint(base_url=f"http://{machine.id}.fake")

    async def aclose(self) -> None:
        return None
