"""The warm pool: machines booted ahead of any preview, each claimed by one new preview.

A pooled machine boots the pool's template (``WARM_POOL_TEMPLATE``, fetched from
``/v1/pool/template`` with a pool token good for nothing else): its dependencies installed and its dev
server running, with no user's code and no user's npm cache. It counts against no user. A create
claims one (``claim``): one statement moves its row from ready to claimed, so a machine goes to one
preview across every replica; the machine gets the preview's metadata, and its agent the preview's
credentials (``agent.claim``), after which it is that preview's machine, destroyed with it and never
pooled again. A claim that fails destroys the machine, and the create makes one as it always did.

The leader refills the pool (``refill``) to ``WARM_POOL_SIZE`` per region, under ``MAX_MACHINES``
machines of ours in all (previews' and pooled), and checks it on every maintenance pass
(``reconcile``): rows whose machine is gone, boots that died with their replica, claims whose
preview never recorded the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

from velocity import metrics
from velocity.auth import Caller, TokenIssuer
from velocity.clock import Clock
from velocity.domain import (
    AgentError,
    BadRequest,
    ConfigError,
    Forbidden,
    Machine,
    MachineSpec,
    MachineState,
    NotFound,
    PooledMachine,
    PoolState,
    Preview,
    PreviewError,
    Unavailable,
)
from velocity.domain.agent_contract import ORIGIN_HEADER
from velocity.projects.archive import pack_directory
from velocity.projects.files import dependencies_key
from velocity.providers.base import (
    META_CREATE_TAG,
    META_INSTANCE,
    META_OWNER,
    META_POOL,
    OWNER_VALUE,
    STOPPED_OR_BEYOND,
    AgentEndpoint,
    MachineProvider,
)
from velocity.service.agent_client import AgentClient
from velocity.service.machines import machine_spec
from velocity.service.tasks import TaskSet
from velocity.settings import Settings
from velocity.store import Store

log = logging.getLogger(__name__)

POOL_PREFIX = "pool-"
# The template's project id in a pooled agent's environment: no user's project can have it (ids are
# lowercase letters, digits and dashes).
TEMPLATE_PROJECT = "pool~template"
TEMPLATE_PATH = "/v1/pool/template"
# After a pooled machine failed to boot, the pool waits this long before it makes another.
FAILURE_BACKOFF = timedelta(seconds=30)
# A claimed row whose preview has not recorded the machine after this long is given up.
CLAIM_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Template:
    """What pooled machines boot: a project's snapshot, and its dependencies' digest."""

    snapshot: bytes
    dependencies_key: str | None


def load_template(directory: Path, *, max_bytes: int) -> Template:
    """The pool's template from a project directory (``WARM_POOL_TEMPLATE``)."""
    if not (directory / "package.json").is_file():
        raise ConfigError(
            f"WARM_POOL_TEMPLATE {str(directory)!r} is not a project directory (it has no package.json)"
        )
    try:
        snapshot = pack_directory(directory, max_bytes=max_bytes).data
    except BadRequest as exc:
        raise ConfigError(f"WARM_POOL_TEMPLATE cannot be packed: {exc.message}") from exc
    return Template(snapshot, dependencies_key(snapshot))


@dataclass(frozen=True, slots=True)
class Claimed:
    entry: PooledMachine
    machine: Machine
    dependencies_changed: bool


class WarmPool:
    def __init__(
        self,
        *,
        store: Store,
        provider: MachineProvider,
        agents: AgentClient,
        issuer: TokenIssuer,
        settings: Settings,
        clock: Clock,
        instance: str,
        template: Template | None,
    ) -> None:
        self._store = store
        self._provider = provider
        self._agents = agents
        self._issuer = issuer
        self._settings = settings
        self._clock = clock
        self._instance = instance
        self.template = template
        self.size = settings.warm_pool_size if template is not None else 0
        self._tasks = TaskSet()
        self._failed_at: datetime | None = None
        self.wanted = asyncio.Event()  # a claim took a machine: the leader refills soon

    @property
    def regions(self) -> list[str | None]:
        return list(self._settings.fly_regions) or [None]

    # --- claims ----------------------------------------------------------------------------------
    async def claim(
        self, preview: Preview, *, token: str, origin_secret: str, metadata: Mapping[str, str]
    ) -> Claimed | None:
        """A ready pooled machine made ``preview``'s, or ``None`` (the pool is empty, or the claim
        failed and the machine was destroyed): the caller then creates one."""
        if self.size == 0:
            return None
        entry = await self._store.claim_pooled(preview.id, now=self._clock.now(), regions=self.regions)
        if entry is None:
            metrics.POOL_CLAIMS.labels("empty").inc()
            return None
        self.wanted.set()
        assert entry.machine_id is not None  # a ready entry has its machine
        try:
            machine = await self._provider.get(entry.machine_id)
            if machine.state is not MachineState.STARTED:
                raise AgentError(f"its machine is {machine.state.value}")
            await self._provider.assign(machine.id, metadata)
            body = {
                "preview_id": preview.id,
                "project_id": preview.project_id,
                "token": token,
                "origin_secret": origin_secret,
            }
            answer = await self._agents.claim(self._endpoint(entry.key, machine), body)
        except PreviewError as exc:
            log.warning("pooled machine %s could not be claimed: %s", entry.machine_id, exc.message)
            metrics.POOL_CLAIMS.labels("failed").inc()
            await self._discard(entry)
            return None
        changed = bool(answer.get("dependencies_changed"))
        metrics.POOL_CLAIMS.labels("installed" if changed else "warm").inc()
        return Claimed(entry, machine, changed)

    async def recorded(self, entry: PooledMachine) -> None:
        """The claiming preview has recorded the machine as its own (or, deleted meanwhile, destroys
        it): the pool forgets it."""
        await self._store.remove_pooled(entry.key)

    async def template_for(self, caller: Caller) -> bytes:
        """The template, for the agent of a machine the pool is booting (a pool token, whose machine
        is pooled still: once claimed, the token is good for nothing)."""
        name = caller.preview_id or ""
        if self.template is not None and caller.is_agent and name.startswith(POOL_PREFIX):
            key = name.removeprefix(POOL_PREFIX)
            for entry in await self._store.list_pooled():
                if entry.key == key and entry.state is not PoolState.CLAIMED:
                    return self.template.snapshot
        raise Forbidden("the pool's template is for the agents of machines the pool is booting")

    # --- refill ----------------------------------------------------------------------------------
    async def refill(self, *, machines: int) -> list[str]:
        """Start booting pooled machines until each region has ``size`` (``machines``: how many of
        ours exist besides the pool's, for ``MAX_MACHINES``); returns what was started."""
        if self.size == 0:
            return []
        now = self._clock.now()
        if self._failed_at is not None and now - self._failed_at < FAILURE_BACKOFF:
            return []
        entries = [e for e in await self._store.list_pooled() if e.state is not PoolState.CLAIMED]
        room = self._settings.max_machines - machines - len(entries)
        done = []
        for region in self.regions:
            missing = self.size - sum(1 for e in entries if e.region == region)
            for _ in range(max(0, min(missing, room))):
                entry = PooledMachine(
                    key=secrets.token_hex(8),
                    state=PoolState.PROVISIONING,
                    instance=self._instance,
                    created_at=now,
                    updated_at=now,
                    region=region,
                )
                await self._store.add_pooled(entry)
                self._tasks.start(f"pool:{entry.key}", self._boot(entry))
                room -= 1
                done.append(f"booting pooled machine {entry.key}" + (f" in {region}" if region else ""))
            if room <= 0 and missing > 0:
                log.warning(
                    "the warm pool is short of %d machine(s): MAX_MACHINES=%d is reached",
                    missing,
                    self._settings.max_machines,
                )
        return done

    async def _boot(self, entry: PooledMachine) -> None:
        machine_id: str | None = None
        try:
            machine = await self._provider.create(self._spec(entry))
            machine_id = machine.id
            if not await self._store.update_pooled(
                entry.key,
                expect=PoolState.PROVISIONING,
                state=PoolState.BOOTING,
                machine_id=machine.id,
                updated_at=self._clock.now(),
            ):
                raise AgentError("its pool entry was removed while it was being made")
            await self._until_pooled(entry, machine)
            if not await self._store.update_pooled(
                entry.key, expect=PoolState.BOOTING, state=PoolState.READY, updated_at=self._clock.now()
            ):
                raise AgentError("its pool entry was removed while it booted")
        except PreviewError as exc:
            self._failed_at = self._clock.now()
            metrics.POOL_BOOT_FAILURES.inc()
            log.warning("a pooled machine did not boot: %s", exc.message)
            if machine_id is not None:
                with contextlib.suppress(PreviewError):
                    await self._provider.destroy(machine_id)
            with contextlib.suppress(PreviewError):
                await self._store.remove_pooled(entry.key)
            return
        took = (self._clock.now() - entry.created_at).total_seconds()
        log.info("pooled machine %s ready after %.2f s", machine.id, took)

    async def _until_pooled(self, entry: PooledMachine, machine: Machine) -> None:
        deadline = entry.created_at + timedelta(seconds=self._settings.container_timeout_seconds)
        with contextlib.suppress(Unavailable, NotFound):
            await self._provider.wait(machine.id, state=MachineState.STARTED, timeout=60)
        endpoint = self._endpoint(entry.key, machine)
        while (remaining := (deadline - self._clock.now()).total_seconds()) > 0:
            try:
                health = await self._agents.health(endpoint, wait_ready=min(remaining, 20.0))
            except AgentError:
                if (await self._provider.get(machine.id)).state in STOPPED_OR_BEYOND:
                    raise AgentError("its machine stopped while booting the template") from None
                await self._clock.sleep(0.1)
                continue
            if health.failed:
                raise AgentError(f"its agent failed: {health.detail or 'no detail'}")
            if health.ready and health.raw.get("pooled") is True:
                return
            await self._clock.sleep(0.05)
        raise AgentError(
            f"the template was not served within {self._settings.container_timeout_seconds} s "
            "(CONTAINER_TIMEOUT_SECONDS)"
        )

    def _spec(self, entry: PooledMachine) -> MachineSpec:
        settings = self._settings
        name = POOL_PREFIX + entry.key
        env = {
            "PROJECT_ID": TEMPLATE_PROJECT,
            "SNAPSHOT_URL": f"{settings.orchestrator_url}{TEMPLATE_PATH}",
            "AGENT_TOKEN": self._issuer.mint_agent(
                preview_id=name, project_id=TEMPLATE_PROJECT, ttl_seconds=24 * 3600
            ),
            "AGENT_ORIGIN_SECRET": self._issuer.origin_secret(name),
            "AGENT_POOLED": "1",
        }
        metadata = {
            META_OWNER: OWNER_VALUE,
            META_POOL: entry.key,
            META_INSTANCE: self._instance,
            META_CREATE_TAG: f"{name}-{secrets.token_hex(4)}",
        }
        # No user and no cache key: a pooled machine has its own npm cache and a fresh install, so
        # nothing any user's code touched reaches it (the local provider keys both by user).
        return machine_spec(settings, env=env, metadata=metadata, region=entry.region)

    def _endpoint(self, key: str, machine: Machine) -> AgentEndpoint:
        endpoint = self._provider.endpoint(machine)
        secret = self._issuer.origin_secret(POOL_PREFIX + key)
        return replace(endpoint, headers={**endpoint.headers, ORIGIN_HEADER: secret})

    # --- upkeep ----------------------------------------------------------------------------------
    async def reconcile(self, machines: list[Machine], *, replicas: set[str]) -> list[str]:
        """Forget pool rows whose machine is gone, boots no replica finishes and claims no preview
        finished; ``machines`` is the provider's list, read before the rows. Returns what was done."""
        done = []
        listed = {m.id: m for m in machines}
        now = self._clock.now()
        for entry in await self._store.list_pooled():
            age = (now - entry.updated_at).total_seconds()
            if entry.state is PoolState.CLAIMED:
                preview = await self._store.find_preview(entry.preview_id or "")
                if preview is not None and preview.machine_id == entry.machine_id:
                    await self._store.remove_pooled(entry.key)  # the preview's, though not forgotten
                elif preview is None or not preview.is_live or age > CLAIM_SECONDS:
                    await self._discard(entry)
                    done.append(f"destroyed pooled machine {entry.machine_id}: its claim was not finished")
                continue
            booting = entry.state is not PoolState.READY
            mine = entry.instance == self._instance
            if booting and (
                self._tasks.running(f"pool:{entry.key}") or (not mine and entry.instance in replicas)
            ):
                continue  # a boot under way, here or on a replica that still beats
            if booting:
                await self._discard(entry)
                done.append(f"removed pooled machine {entry.key}: its boot was not finished")
                continue
            machine = listed.get(entry.machine_id or "")
            if machine is None or machine.state in STOPPED_OR_BEYOND:
                with contextlib.suppress(NotFound):
                    machine = await self._provider.get(entry.machine_id or "")
                if machine is None or machine.state in STOPPED_OR_BEYOND:
                    await self._discard(entry)
                    done.append(f"removed pooled machine {entry.machine_id}: it no longer runs")
        return done

    async def kept(self) -> set[str]:
        """The keys of pool entries, whose machines are not orphans (metadata ``META_POOL``)."""
        return {entry.key for entry in await self._store.list_pooled()}

    async def census(self) -> None:
        counts = {state: 0 for state in PoolState}
        for entry in await self._store.list_pooled():
            counts[entry.state] += 1
        for state, count in counts.items():
            metrics.POOL_MACHINES.labels(state.value).set(count)

    async def drain(self) -> None:
        """Destroy the pool's machines made by this replica (it is shutting down, previews too)."""
        await self._tasks.close()
        for entry in await self._store.list_pooled():
            if entry.instance == self._instance and entry.state is not PoolState.CLAIMED:
                await self._discard(entry)

    async def _discard(self, entry: PooledMachine) -> None:
        if entry.machine_id is not None:
            with contextlib.suppress(PreviewError):
                await self._provider.destroy(entry.machine_id)
        await self._store.remove_pooled(entry.key)

    async def close(self) -> None:
        await self._tasks.close()
