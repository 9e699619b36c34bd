"""The emulator's machines: Fly's state machine on top of any ``MachineProvider``.

Every Fly machine is a record here; when it runs, a machine of the backing provider runs for it
(a simulated one, or a local sandbox). Fly resets a stopped machine's root filesystem on the next
start, so stopping destroys the backing machine and starting makes a fresh one. Suspending suspends
the backing machine (a sandbox is frozen) and starting resumes it; where the backing provider cannot
suspend, the next start is a cold boot, which Fly also falls back to. Transitions of one machine run one at
a time, in tasks, so API calls answer at once while the state moves on, as on Fly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from velocity.clock import Clock
from velocity.domain import MachineState, PreviewError, Unavailable
from velocity.emulator import ids
from velocity.emulator.wire import health_checks, spec_from_config
from velocity.providers.base import AgentEndpoint, MachineProvider

HealthProbe = Callable[[AgentEndpoint, str], Awaitable[bool]]

RESTING = frozenset({"created", "started", "stopped", "suspended", "failed", "destroyed"})
# How long the backing provider may take to boot before the machine counts as failed.
BOOT_TIMEOUT = 120.0
# A monitor re-arms its wait for the backing machine's exit this often.
MONITOR_SLICE = 3600.0


class LeaseHeld(Exception):
    def __init__(self, owner: str, expires_at: int) -> None:
        super().__init__(f"lease currently held by {owner}, expires at {expires_at}")


@dataclass(slots=True)
class Lease:
    nonce: str
    owner: str
    description: str
    expires_at: int
    version: str


class EmulatedMachine:
    __slots__ = (
        "app", "backing_id", "config", "created_at", "events", "exit_reason", "id", "lease", "lock",
        "monitor", "name", "private_ip", "region", "restarts", "state", "updated_at", "version", "versions",
    )  # fmt: skip

    def __init__(self, *, app: str, name: str, region: str, config: dict[str, Any], now: datetime) -> None:
        self.id = ids.machine_id()
        self.app = app
        self.name = name
        self.region = region
        self.config = config
        self.version = ids.ulid(now)
        self.versions: dict[str, dict[str, Any]] = {}  # replaced versions and their configs
        self.created_at = now
        self.updated_at = now
        self.state = "created"
        self.events: list[dict[str, Any]] = []  # newest first, as Fly lists them
        self.backing_id: str | None = None
        self.lease: Lease | None = None
        self.private_ip = ids.private_ip()
        self.exit_reason: str | None = None
        self.restarts = 0
        self.monitor: asyncio.Task[None] | None = None
        self.lock = asyncio.Lock()


class Fleet:
    def __init__(self, provider: MachineProvider, clock: Clock, *, health: HealthProbe | None = None) -> None:
        self.provider = provider
        self.clock = clock
        self.health = health
        self.failing_images: frozenset[str] = frozenset()
        self.machines: dict[str, EmulatedMachine] = {}
        # One per machine: a change wakes the waits for that machine, not those for every other one.
        self._changed: dict[str, asyncio.Condition] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # --- what the API asks for ------------------------------------------------------------------
    async def add(
        self, *, app: str, region: str, config: dict[str, Any], name: str | None, launch: bool
    ) -> EmulatedMachine:
        machine = EmulatedMachine(
            app=app, name=name or ids.machine_name(), region=region, config=config, now=self.clock.now()
        )
        self.machines[machine.id] = machine
        await self._record(machine, "launch", "created", source="user")
        if launch:
            self.schedule(machine, self._launch(machine))
        return machine

    def start(self, machine: EmulatedMachine) -> None:
        self.schedule(machine, self._launch(machine))

    def stop(self, machine: EmulatedMachine, *, signal: str, kill_after: float) -> None:
        self.schedule(machine, self._stop(machine, request={"signal": signal, "timeout": kill_after}))

    def suspend(self, machine: EmulatedMachine) -> None:
        self.schedule(machine, self._suspend(machine))

    def destroy(self, machine: EmulatedMachine) -> None:
        self.schedule(machine, self._destroy(machine))

    def update(self, machine: EmulatedMachine, config: dict[str, Any], *, launch: bool) -> None:
        machine.versions[machine.version] = machine.config
        machine.config = config
        machine.version = ids.ulid(self.clock.now())
        was_running = machine.state in ("started", "starting")
        self.schedule(machine, self._replace(machine, relaunch=launch or was_running))

    async def wait(
        self, machine: EmulatedMachine, states: frozenset[str], *, after_event: str | None
    ) -> tuple[str, str | None]:
        """The first matching state and its event, reached after ``after_event`` or now; callers bound it."""

        def reached() -> tuple[str, str | None] | None:
            if after_event is not None and any(e["id"] == after_event for e in machine.events):
                for event in reversed(machine.events[: _index(machine, after_event)]):
                    if _matches(event["status"], states):
                        return event["status"], event["id"]
                return None
            if _matches(machine.state, states):
                return machine.state, machine.events[0]["id"] if machine.events else None
            return None

        changed = self._changed.setdefault(machine.id, asyncio.Condition())
        async with changed:
            await changed.wait_for(lambda: reached() is not None)
        found = reached()
        assert found is not None
        return found

    async def checks(self, machine: EmulatedMachine) -> list[dict[str, Any]]:
        """Status of the machine's HTTP checks, probing the backing agent when a probe is configured."""
        statuses = []
        for name, path in health_checks(machine.config):
            passing = machine.state == "started"
            if passing and self.health is not None:
                endpoint = await self.agent_endpoint(machine)
                passing = endpoint is not None and await self.health(endpoint, path)
            statuses.append(
                {
                    "name": name,
                    "status": "passing" if passing else "critical",
                    "output": "200 OK" if passing else "machine is not serving",
                    "updated_at": _rfc3339(self.clock.now()),
                }
            )
        return statuses

    async def agent_endpoint(self, machine: EmulatedMachine) -> AgentEndpoint | None:
        if machine.backing_id is None:
            return None
        try:
            return self.provider.endpoint(await self.provider.get(machine.backing_id))
        except PreviewError:
            return None

    def lease_check(self, machine: EmulatedMachine, nonce: str | None) -> None:
        """Mutations of a leased machine need the lease's nonce."""
        lease = self.active_lease(machine)
        if lease is not None and lease.nonce != nonce:
            raise LeaseHeld(lease.owner, lease.expires_at)

    def active_lease(self, machine: EmulatedMachine) -> Lease | None:
        if machine.lease is not None and machine.lease.expires_at <= int(self.clock.now().timestamp()):
            machine.lease = None
        return machine.lease

    def acquire_lease(
        self, machine: EmulatedMachine, *, ttl: int, description: str, owner: str, nonce: str | None
    ) -> Lease:
        current = self.active_lease(machine)
        expires_at = int(self.clock.now().timestamp()) + ttl
        if current is not None:
            if current.nonce != nonce:
                raise LeaseHeld(current.owner, current.expires_at)
            current.expires_at = expires_at
            return current
        machine.lease = Lease(ids.nonce(), owner, description, expires_at, machine.version)
        return machine.lease

    async def aclose(self) -> None:
        """Cancel every transition and destroy every backing machine, so nothing outlives the emulator."""
        tasks = [*self._tasks, *(m.monitor for m in self.machines.values() if m.monitor)]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        for machine in self.machines.values():
            if machine.backing_id is not None:
                with contextlib.suppress(PreviewError):
                    await self.provider.destroy(machine.backing_id, force=True)
                machine.backing_id = None

    # --- transitions, one at a time per machine -------------------------------------------------
    def schedule(self, machine: EmulatedMachine, step: Coroutine[Any, Any, None]) -> None:
        async def run() -> None:
            try:
                async with machine.lock:
                    await step
            finally:
                step.close()  # a step cancelled before it began is closed, never left un-awaited

        task = asyncio.create_task(run(), name=f"fly-emulator-{machine.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _launch(self, machine: EmulatedMachine) -> None:
        if machine.state in ("started", "destroying", "destroyed"):
            return
        resuming = machine.state == "suspended" and machine.backing_id is not None
        await self._record(machine, "start", "starting", source="user")
        if resuming and machine.backing_id is not None:
            try:
                await self.provider.resume(machine.backing_id)
            except PreviewError:
                await self._release_backing(machine)  # the snapshot is lost: a cold boot
            else:
                await self._record(machine, "start", "started", source="flyd")
                return
        image = machine.config["image"]
        if image in self.failing_images:
            await self._exit(machine, "failed", exit_code=1, reason=f"failed to pull image {image}")
            return
        try:
            spec = spec_from_config(machine.config, region=machine.region)
            backing = await self.provider.create(replace(spec, env={**spec.env, **runtime_env(machine)}))
            machine.backing_id = backing.id
            await self.provider.wait(backing.id, state=MachineState.STARTED, timeout=BOOT_TIMEOUT)
        except PreviewError as exc:
            await self._release_backing(machine)
            await self._exit(machine, "failed", exit_code=1, reason=str(exc))
            return
        machine.exit_reason = None
        await self._record(machine, "start", "started", source="flyd")
        machine.monitor = asyncio.create_task(
            self._monitor(machine, backing.id), name=f"fly-monitor-{machine.id}"
        )

    async def _suspend(self, machine: EmulatedMachine) -> None:
        if machine.state != "started":
            return
        await self._record(machine, "suspend", "suspending", source="user")
        kept = False
        if machine.backing_id is not None:
            with contextlib.suppress(PreviewError):
                kept = await self.provider.suspend(machine.backing_id)
        if not kept:
            await self._release_backing(machine)
        await self._record(machine, "suspend", "suspended", source="flyd")

    async def _stop(self, machine: EmulatedMachine, *, request: dict[str, Any]) -> None:
        # Stopping a suspended machine discards its snapshot (docs: machines/overview).
        if machine.state not in ("started", "starting", "created", "failed", "suspended"):
            return
        await self._record(machine, "stop", "stopping", source="user")
        await self._release_backing(machine)
        await self._exit(
            machine, "stopped", exit_code=0, reason="stopped on request", requested=True, request=request
        )

    async def _destroy(self, machine: EmulatedMachine) -> None:
        if machine.state == "destroyed":
            return
        await self._record(machine, "destroy", "destroying", source="user")
        await self._release_backing(machine)
        machine.lease = None
        await self._record(machine, "destroy", "destroyed", source="flyd")

    async def _replace(self, machine: EmulatedMachine, *, relaunch: bool) -> None:
        await self._record(machine, "update", "replacing", source="user")
        await self._release_backing(machine)
        if relaunch:
            await self._launch(machine)
        else:
            await self._record(machine, "update", "stopped", source="flyd")

    async def _exited_on_its_own(self, machine: EmulatedMachine, reason: str) -> None:
        if machine.state != "started":
            return  # we stopped it ourselves; that path records the exit
        await self._release_backing(machine)
        restart = machine.config.get("restart") or {}
        policy = restart.get("policy", "on-failure")
        if policy == "always" or (
            policy == "on-failure" and machine.restarts < restart.get("max_retries", 10)
        ):
            machine.restarts += 1
            await self._exit(machine, "stopped", exit_code=1, reason=reason, final=False)
            await self._launch(machine)
            return
        await self._exit(machine, "stopped", exit_code=1, reason=reason)

    async def _monitor(self, machine: EmulatedMachine, backing_id: str) -> None:
        while True:
            try:
                exited = await self.provider.wait(
                    backing_id, state=MachineState.STOPPED, timeout=MONITOR_SLICE
                )
            except Unavailable:
                continue
            except PreviewError:
                return  # destroyed or failed under us: whoever did that records it
            self.schedule(machine, self._exited_on_its_own(machine, exited.exit_reason or "exited"))
            return

    async def _exit(
        self,
        machine: EmulatedMachine,
        state: str,
        *,
        exit_code: int,
        reason: str,
        requested: bool = False,
        request: dict[str, Any] | None = None,
        final: bool = True,
    ) -> None:
        machine.exit_reason = reason
        exit_event = {
            "exit_code": exit_code,
            "requested_stop": requested,
            "oom_killed": False,
            "restarting": not final,
        }
        await self._record(
            machine, "exit", state, source="flyd", request={**(request or {}), "exit_event": exit_event}
        )
        if final and state == "stopped" and machine.config.get("auto_destroy"):
            await self._destroy(machine)

    async def _release_backing(self, machine: EmulatedMachine) -> None:
        monitor, machine.monitor = machine.monitor, None
        if monitor is not None and monitor is not asyncio.current_task():
            monitor.cancel()
            await asyncio.wait([monitor])
        backing, machine.backing_id = machine.backing_id, None
        if backing is not None:
            with contextlib.suppress(PreviewError):
                await self.provider.destroy(backing, force=True)

    async def _record(
        self,
        machine: EmulatedMachine,
        kind: str,
        state: str,
        *,
        source: str,
        request: dict[str, Any] | None = None,
    ) -> None:
        now = self.clock.now()
        event: dict[str, Any] = {
            "id": ids.ulid(now),
            "type": kind,
            "status": state,
            "source": source,
            "timestamp": int(now.timestamp() * 1000),
        }
        if request is not None:
            event["request"] = request
        machine.events.insert(0, event)
        del machine.events[50:]  # Fly keeps a bounded history
        machine.state = state
        machine.updated_at = now
        changed = self._changed.get(machine.id)
        if state == "destroyed":
            self._changed.pop(machine.id, None)  # its waiters hold it; a new wait finds it destroyed
        if changed is not None:
            async with changed:
                changed.notify_all()


def runtime_env(machine: EmulatedMachine) -> dict[str, str]:
    """What Fly sets in every machine's environment (Fly's "Machine runtime environment" docs); the
    machine's own ``env`` cannot override these."""
    guest = machine.config.get("guest") or {}
    return {
        "FLY_APP_NAME": machine.app,
        "FLY_MACHINE_ID": machine.id,
        "FLY_ALLOC_ID": machine.id,
        "FLY_REGION": machine.region,
        "FLY_PRIVATE_IP": machine.private_ip,
        "FLY_IMAGE_REF": str(machine.config.get("image", "")),
        "FLY_MACHINE_VERSION": machine.version,
        "FLY_PROCESS_GROUP": str((machine.config.get("metadata") or {}).get("fly_process_group", "app")),
        "FLY_VM_MEMORY_MB": str(guest.get("memory_mb", 256)),
        "PRIMARY_REGION": machine.region,
    }


def _matches(state: str, wanted: frozenset[str]) -> bool:
    return state in wanted or ("settled" in wanted and state in RESTING)


def _index(machine: EmulatedMachine, event_id: str) -> int:
    return next(i for i, event in enumerate(machine.events) if event["id"] == event_id)


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
