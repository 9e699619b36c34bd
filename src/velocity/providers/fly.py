"""Preview machines on Fly.io Machines, through ``velocity.fly.FlyClient``.

Creation walks ``FLY_REGIONS`` in order and moves on when a region is out of capacity. The agent is
reached at the machine's private network name, ``http://<machine_id>.vm.<app>.internal:<port>``
(docs/fly.md says why not ``fly-force-instance-id``); against the emulator on a laptop the provider asks
the emulator where the backing sandbox listens instead.
"""

from __future__ import annotations

import builtins
import contextlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Literal

from velocity.clock import Clock
from velocity.deploy import MachineTemplate
from velocity.domain import CapacityError, Machine, MachineSpec, MachineState, NotFound, ProviderError
from velocity.domain.memory import more_memory
from velocity.fly.client import FlyClient
from velocity.fly.machine_config import MachinePlan, create_request
from velocity.fly.types import MachineJSON
from velocity.providers.base import STOPPED_OR_BEYOND, AgentEndpoint
from velocity.settings import Settings

AgentRoute = Literal["private-network", "emulator"]
_KNOWN_MACHINES = 10_000
# Against the emulator, how long create waits for the backing sandbox to start (the emulator's own limit).
_EMULATED_START_SECONDS = 120.0
# Fly suspends machines of at most this much memory (and no swap); larger ones are stopped instead.
SUSPEND_MAX_MEMORY_MB = 2048

# Fly's transient and odd states, folded onto the words the rest of the project uses.
_STATE_ALIASES: Mapping[str, MachineState] = {
    "creating": MachineState.CREATED,
    "restarting": MachineState.STARTING,
    "updating": MachineState.STARTING,
    "replacing": MachineState.STARTING,
    "launch_failed": MachineState.FAILED,
    "replaced": MachineState.DESTROYED,
    "migrated": MachineState.DESTROYED,
}


class FlyProvider:
    name = "fly"

    def __init__(
        self, client: FlyClient, plan: MachinePlan, *, agent_route: AgentRoute = "private-network"
    ) -> None:
        self.client = client
        self.plan = plan
        self._port = plan.template.internal_port or 8080
        self._agent_route = agent_route
        self._emulated_endpoints: dict[str, AgentEndpoint] = {}
        # The last thing Fly told us about each machine, so a wait costs one call, not a wait and a get.
        self._known: OrderedDict[str, Machine] = OrderedDict()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        template: MachineTemplate | None = None,
        clock: Clock | None = None,
        agent_route: AgentRoute = "private-network",
    ) -> FlyProvider:
        """The provider production runs: token, app and base URL from settings, ``template`` (by default
        ``preview-container/fly.toml``) with the settings applied."""
        plan = MachinePlan.from_settings(settings, template)
        return cls(FlyClient.from_settings(settings, clock=clock), plan, agent_route=agent_route)

    async def create(self, spec: MachineSpec) -> Machine:
        regions = [spec.region] if spec.region else []
        regions += [region for region in self.plan.regions if region not in regions]
        full: list[str] = []
        for region in regions:
            try:
                created = await self.client.create_machine(create_request(spec, self.plan, region=region))
            except CapacityError:
                full.append(region)
                continue
            machine = self._remember(machine_from_json(created))
            if self._agent_route == "emulator":
                # The service dials the agent as soon as create returns, and only the emulator knows
                # where a backing sandbox listens, once it has started: learn it here.
                return await self.wait(
                    machine.id, state=MachineState.STARTED, timeout=_EMULATED_START_SECONDS
                )
            return machine
        raise CapacityError(f"no capacity in {', '.join(full)}; add regions to FLY_REGIONS or retry later")

    async def get(self, machine_id: str) -> Machine:
        try:
            machine = self._remember(machine_from_json(await self.client.get_machine(machine_id)))
        except NotFound:
            self._known.pop(machine_id, None)
            raise
        # Another replica may have waited for it to start: this one learns the endpoint now.
        unknown = self._agent_route == "emulator" and machine_id not in self._emulated_endpoints
        if unknown and machine.state is MachineState.STARTED:
            await self._learn_emulated_endpoint(machine_id)
        return machine

    async def list(self, *, metadata: Mapping[str, str] | None = None) -> builtins.list[Machine]:
        machines = await self.client.list_machines(metadata=metadata)
        return [m for m in map(machine_from_json, machines) if m.state is not MachineState.DESTROYED]

    async def wait(self, machine_id: str, *, state: MachineState, timeout: float) -> Machine:
        # Also wake on the states that mean the wanted one will never come.
        targets = [state.value]
        if state is MachineState.STARTED:
            targets.append(MachineState.FAILED.value)
        elif state in STOPPED_OR_BEYOND:
            targets += [s.value for s in (MachineState.STOPPED, MachineState.FAILED, MachineState.DESTROYED)]
        answer = await self.client.wait_machine(
            machine_id, states=list(dict.fromkeys(targets)), timeout=timeout
        )
        reached = MachineState(answer.get("state", state.value))
        if state is MachineState.STARTED and reached is not MachineState.STARTED:
            exit_reason = None
            if reached is MachineState.FAILED:
                exit_reason = (await self.get(machine_id)).exit_reason
            raise ProviderError(
                f"machine {machine_id} is {reached} instead of started ({exit_reason or 'no reason'})"
            )
        if state is MachineState.STARTED and self._agent_route == "emulator":
            await self._learn_emulated_endpoint(machine_id)
        # The wait answers with a state only; the rest of the machine came with create, get or list.
        known = self._known.get(machine_id)
        if known is None:
            if reached is MachineState.DESTROYED:
                return Machine(id=machine_id, state=reached, metadata={}, created_at=_now())
            known = await self.get(machine_id)
        return self._remember(replace(known, state=reached))

    async def stop(self, machine_id: str, *, timeout: float = 10.0) -> None:
        await self.client.stop_machine(machine_id, kill_timeout=timeout)

    async def suspend(self, machine_id: str) -> bool:
        """Fly's ``suspend``, where the machine allows it: at most 2 GB of memory and no swap
        (docs: reference/suspend-resume)."""
        config = (await self.client.get_machine(machine_id)).get("config") or {}
        guest = config.get("guest") or {}
        if int(guest.get("memory_mb") or 0) > SUSPEND_MAX_MEMORY_MB or config.get("swap_size_mb"):
            return False
        await self.client.suspend_machine(machine_id)
        await self.wait(machine_id, state=MachineState.SUSPENDED, timeout=60)
        return True

    async def resume(self, machine_id: str) -> None:
        """``start``: Fly resumes from the snapshot when it still has it, else boots afresh. Fly's
        proxy may have started it already, for a request replayed to it."""
        if (await self.get(machine_id)).state is not MachineState.SUSPENDED:
            await self.wait(machine_id, state=MachineState.STARTED, timeout=60)
            return
        await self.client.start_machine(machine_id)
        await self.wait(machine_id, state=MachineState.STARTED, timeout=60)

    async def assign(self, machine_id: str, metadata: Mapping[str, str]) -> None:
        """One ``PATCH .../metadata`` (keys it names change, the rest stay)."""
        await self.client.patch_metadata(machine_id, dict(metadata))
        known = self._known.get(machine_id)
        if known is not None:
            self._remember(replace(known, metadata={**known.metadata, **metadata}))

    async def destroy(self, machine_id: str, *, force: bool = True) -> None:
        self._emulated_endpoints.pop(machine_id, None)
        self._known.pop(machine_id, None)
        with contextlib.suppress(NotFound):  # already gone: destroying is idempotent
            await self.client.destroy_machine(machine_id, force=force)

    async def logs(self, machine_id: str, *, tail: int = 100) -> builtins.list[str]:
        """Empty: Fly ships machine logs to its log service (``fly logs``), not through the Machines API."""
        return []

    def endpoint(self, machine: Machine) -> AgentEndpoint:
        if self._agent_route == "emulator":
            if (known := self._emulated_endpoints.get(machine.id)) is not None:
                return known
            raise ProviderError(
                f"machine {machine.id}: its agent endpoint is learnt when waiting for it to start"
            )
        return AgentEndpoint(base_url=f"http://{machine.id}.vm.{self.client.app}.internal:{self._port}")

    async def aclose(self) -> None:
        await self.client.aclose()

    def _remember(self, machine: Machine) -> Machine:
        self._known[machine.id] = machine
        self._known.move_to_end(machine.id)
        while len(self._known) > _KNOWN_MACHINES:
            self._known.popitem(last=False)
        return machine

    async def _learn_emulated_endpoint(self, machine_id: str) -> None:
        found = await self.client.emulator_agent_endpoint(machine_id)
        headers = found.get("headers") or {}
        self._emulated_endpoints[machine_id] = AgentEndpoint(
            base_url=str(found.get("base_url", "")),
            uds=found.get("uds") if isinstance(found.get("uds"), str) else None,
            headers={str(k): str(v) for k, v in headers.items()} if isinstance(headers, dict) else {},
        )


def machine_from_json(data: MachineJSON) -> Machine:
    """Our ``Machine`` from Fly's JSON; unknown states raise rather than pass as something else."""
    raw_state = data.get("state", "")
    try:
        state = _STATE_ALIASES.get(raw_state) or MachineState(raw_state)
    except ValueError as exc:
        raise ProviderError(f"Fly reported machine {data.get('id')} in unknown state {raw_state!r}") from exc
    return Machine(
        id=data["id"],
        state=state,
        metadata=dict(data.get("config", {}).get("metadata", {})),
        created_at=parse_time(data.get("created_at")),
        region=data.get("region", "unknown"),
        private_ip=data.get("private_ip"),
        exit_reason=_exit_reason(data),
        updated_at=parse_time(data["updated_at"]) if data.get("updated_at") else None,
    )


def parse_time(value: str | None) -> datetime:
    if not value:
        return _now()
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _exit_reason(data: MachineJSON) -> str | None:
    for event in data.get("events", []):  # newest first
        request = event.get("request") or {}
        exit_event = request.get("exit_event")
        if event.get("type") == "exit" and isinstance(exit_event, dict):
            if exit_event.get("oom_killed"):
                memory = ((data.get("config") or {}).get("guest") or {}).get("memory_mb")
                return f"out of memory; {more_memory(memory if isinstance(memory, int) else None)}"
            if exit_event.get("requested_stop"):
                return "stopped on request"
            return f"exit code {exit_event.get('exit_code')}"
    return None


def _now() -> datetime:
    return datetime.now(UTC)
