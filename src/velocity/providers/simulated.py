"""Machines that exist only in memory, with configurable latencies: no processes, no network.

The Fly emulator backs its machines with this provider for load tests and benchmarks, and the provider
contract suite holds it to the same behaviour as the real ones. ``failing_images`` make boots fail;
``exit`` makes a started machine's process end on its own, as a crashed agent would.
"""

from __future__ import annotations

import asyncio
import builtins
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace

from velocity.clock import Clock, SystemClock
from velocity.domain import Machine, MachineSpec, MachineState, NotFound, ProviderError, Unavailable
from velocity.providers.base import STOPPED_OR_BEYOND, AgentEndpoint


@dataclass(frozen=True, slots=True)
class SimulatedLatencies:
    """Seconds each step takes; zero everywhere measures the code around the machines."""

    create: float = 0.0
    boot: float = 0.0
    stop: float = 0.0
    destroy: float = 0.0
    resume: float = 0.0


class _Record:
    __slots__ = ("changed", "log", "machine", "port", "task")

    def __init__(self, machine: Machine, port: int) -> None:
        self.machine = machine
        self.port = port
        self.task: asyncio.Task[None] | None = None
        self.log: list[str] = []
        # Its own: a change wakes the waits for this machine, not those for every other one.
        self.changed = asyncio.Condition()


class SimulatedProvider:
    name = "simulated"

    def __init__(
        self,
        latencies: SimulatedLatencies | None = None,
        *,
        clock: Clock | None = None,
        failing_images: frozenset[str] = frozenset(),
        agent_url: str | None = None,
    ) -> None:
        self.latencies = latencies or SimulatedLatencies()
        # Where every machine's agent answers: a stand-in that says it serves (None: nowhere).
        self.agent_url = agent_url
        self._clock = clock or SystemClock()
        self._failing_images = failing_images
        self._records: dict[str, _Record] = {}
        # Destroyed machines are forgotten except for their ids: destroy stays idempotent, memory flat.
        self._destroyed: set[str] = set()

    async def create(self, spec: MachineSpec) -> Machine:
        await self._pause(self.latencies.create)
        machine = Machine(
            id=f"sim-{uuid.uuid4().hex[:12]}",
            state=MachineState.STARTING,
            metadata=dict(spec.metadata),
            created_at=self._clock.now(),
            region=spec.region or "sim",
            private_ip="127.0.0.1",
        )
        record = self._records[machine.id] = _Record(machine, spec.internal_port)
        record.task = asyncio.create_task(self._boot(record, spec.image), name=f"simulated-boot-{machine.id}")
        return machine

    async def get(self, machine_id: str) -> Machine:
        return self._record(machine_id).machine

    async def list(self, *, metadata: Mapping[str, str] | None = None) -> builtins.list[Machine]:
        wanted = dict(metadata or {}).items()
        return [r.machine for r in self._records.values() if wanted <= r.machine.metadata.items()]

    async def wait(self, machine_id: str, *, state: MachineState, timeout: float) -> Machine:
        if state is MachineState.DESTROYED and machine_id in self._destroyed:
            return Machine(id=machine_id, state=state, metadata={}, created_at=self._clock.now())
        record = self._record(machine_id)

        # Waiting for ``stopped`` also ends on failure or destruction: the machine no longer runs.
        enough = STOPPED_OR_BEYOND if state in STOPPED_OR_BEYOND else frozenset({state})

        def settled() -> bool:
            current = record.machine.state
            return current in enough or current in (MachineState.FAILED, MachineState.DESTROYED)

        try:
            async with asyncio.timeout(timeout), record.changed:
                await record.changed.wait_for(settled)
        except TimeoutError:
            raise Unavailable(
                f"machine {machine_id} did not reach {state} within {timeout:g}s", delay=0.0
            ) from None
        reached = record.machine
        if reached.state not in enough:
            raise ProviderError(
                f"machine {machine_id} is {reached.state} ({reached.exit_reason or 'no reason'})"
            )
        return reached

    async def stop(self, machine_id: str, *, timeout: float = 10.0) -> None:
        record = self._record(machine_id)
        if record.machine.state in (MachineState.STOPPED, MachineState.STOPPING):
            return
        await self._cancel(record)
        await self._set(record, MachineState.STOPPING)
        await self._pause(self.latencies.stop)
        await self._set(record, MachineState.STOPPED, exit_reason="stopped on request")

    async def suspend(self, machine_id: str) -> bool:
        record = self._record(machine_id)
        if record.machine.state != MachineState.STARTED:
            raise ProviderError(
                f"machine {machine_id} is {record.machine.state}, not started: it cannot be suspended"
            )
        await self._set(record, MachineState.SUSPENDING)
        await self._pause(self.latencies.stop)
        await self._set(record, MachineState.SUSPENDED)
        return True

    async def assign(self, machine_id: str, metadata: Mapping[str, str]) -> None:
        record = self._record(machine_id)
        record.machine = replace(record.machine, metadata={**record.machine.metadata, **metadata})

    async def resume(self, machine_id: str) -> None:
        record = self._record(machine_id)
        if record.machine.state != MachineState.SUSPENDED:
            return
        await self._set(record, MachineState.STARTING)
        await self._pause(self.latencies.resume)
        await self._set(record, MachineState.STARTED)

    async def destroy(self, machine_id: str, *, force: bool = True) -> None:
        record = self._records.get(machine_id)
        if record is None:
            return
        await self._cancel(record)
        await self._set(record, MachineState.DESTROYING)
        await self._pause(self.latencies.destroy)
        await self._set(record, MachineState.DESTROYED)
        self._records.pop(machine_id, None)
        self._destroyed.add(machine_id)

    async def exit(self, machine_id: str, *, reason: str = "exit code 1") -> None:
        """The machine's main process ends on its own, as when the agent crashes."""
        record = self._record(machine_id)
        await self._cancel(record)
        await self._set(record, MachineState.STOPPED, exit_reason=reason)

    async def logs(self, machine_id: str, *, tail: int = 100) -> builtins.list[str]:
        """What a console would have shown: one line per state the machine went through."""
        if machine_id in self._destroyed:
            return []
        return self._record(machine_id).log[-tail:]

    def endpoint(self, machine: Machine) -> AgentEndpoint:
        if self.agent_url is not None:
            return AgentEndpoint(base_url=self.agent_url)
        record = self._records.get(machine.id)
        port = record.port if record else 8080
        return AgentEndpoint(base_url=f"http://{machine.id}.simulated.invalid:{port}")

    async def aclose(self) -> None:
        for record in list(self._records.values()):
            await self._cancel(record)

    async def _boot(self, record: _Record, image: str) -> None:
        await self._pause(self.latencies.boot)
        if image in self._failing_images:
            await self._set(record, MachineState.FAILED, exit_reason=f"image {image} could not be pulled")
        else:
            await self._set(record, MachineState.STARTED)

    def _record(self, machine_id: str) -> _Record:
        record = self._records.get(machine_id)
        if record is None:
            raise NotFound(f"no simulated machine {machine_id}")
        return record

    async def _set(self, record: _Record, state: MachineState, *, exit_reason: str | None = None) -> None:
        record.machine = replace(
            record.machine, state=state, exit_reason=exit_reason, updated_at=self._clock.now()
        )
        record.log.append(
            f"{self._clock.now().isoformat()} {state}" + (f": {exit_reason}" if exit_reason else "")
        )
        async with record.changed:
            record.changed.notify_all()

    async def _cancel(self, record: _Record) -> None:
        task, record.task = record.task, None
        if task is not None and task is not asyncio.current_task() and not task.done():
            task.cancel()
            # asyncio.wait never raises the task's CancelledError, so our own cancellation still propagates.
            await asyncio.wait([task])

    async def _pause(self, seconds: float) -> None:
        if seconds > 0:
            await self._clock.sleep(seconds)
