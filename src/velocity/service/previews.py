"""The preview lifecycle: row first, then the machine, then readiness, then a watch until it ends."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import string
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from velocity import logs, metrics
from velocity.auth import Caller, TokenIssuer
from velocity.clock import Clock
from velocity.domain import (
    LIVE_STATES,
    AgentError,
    Forbidden,
    Machine,
    MachineSpec,
    MachineState,
    NotFound,
    Preview,
    PreviewError,
    PreviewEvent,
    PreviewGone,
    PreviewState,
    ProviderError,
    QuotaExceeded,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)
from velocity.domain.agent_contract import ORIGIN_HEADER
from velocity.policy import Limits, TokenBuckets, end_reason, machines_to_destroy, stuck_machines, verdict
from velocity.providers.base import (
    META_CREATE_TAG,
    META_INSTANCE,
    META_OWNER,
    META_PREVIEW_ID,
    META_PROJECT_ID,
    META_USER_ID,
    OWNER_VALUE,
    STOPPED_OR_BEYOND,
    AgentEndpoint,
    MachineProvider,
)
from velocity.service.agent_client import AgentClient
from velocity.service.machines import machine_spec
from velocity.service.pool import Claimed, WarmPool
from velocity.service.rows import RecentRows
from velocity.service.tasks import TaskSet
from velocity.settings import Settings
from velocity.store import Store

log = logging.getLogger(__name__)

BOOTING_STATES = frozenset({PreviewState.PROVISIONING, PreviewState.BOOTING})
ID_ALPHABET = string.ascii_lowercase + string.digits
ID_LENGTH = 12
# The router does not write every request to the database: activity is flushed at most this often.
ACTIVITY_FLUSH = timedelta(seconds=5)
# Machine time counts as active while the preview saw a request or frame this recently.
ACTIVE_WITHIN = timedelta(minutes=1)
# How long a stop waits for the agent's last log lines before it destroys the machine anyway.
LAST_LINES_SECONDS = 3.0
# How often a wait re-reads a preview another replica owns (its changes reach this process only so).
OTHER_REPLICA_POLL_SECONDS = 0.5
# How long one long-poll to an agent may last; the readiness deadline is checked between polls.
AGENT_POLL_SECONDS = 20.0
# How long to wait between attempts while an agent is not answering yet: from the first, doubling
# up to the most (a local agent answers within milliseconds; a Fly machine's name resolves only
# once it has started).
AGENT_RETRY_SECONDS = 0.02
AGENT_RETRY_MAX_SECONDS = 1.0
# While its agent does not answer, ask the provider about the machine at most this often.
MACHINE_CHECK_SECONDS = 2.0
# Fly's API can answer 404 for a machine it has just created (flyctl retries that 404): a machine
# younger than this that is not found is taken as still coming, not as gone.
NEWBORN_SECONDS = 10.0
# Machine creates one replica makes at once; the rest wait their turn as ``provisioning``. On Fly the
# client's pacing (about one create a second per app) is the tighter bound.
CONCURRENT_CREATES = 64


def new_preview_id() -> str:
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(ID_LENGTH))


def is_preview_id(value: str) -> bool:
    return len(value) == ID_LENGTH and all(c in ID_ALPHABET for c in value)


class PreviewService:
    def __init__(
        self,
        *,
        store: Store,
        provider: MachineProvider,
        agents: AgentClient,
        issuer: TokenIssuer,
        settings: Settings,
        clock: Clock,
        instance: str = "local",
        rows: RecentRows | None = None,
        pool: WarmPool | None = None,
    ) -> None:
        self._store = store
        self.pool = pool
        self._provider = provider
        self._agents = agents
        self._issuer = issuer
        self._settings = settings
        self._clock = clock
        self._instance = instance
        self._rows = rows or RecentRows(store)
        self.limits = Limits(
            lifetime=timedelta(seconds=settings.lifetime_seconds),
            idle=timedelta(seconds=settings.idle_timeout_seconds),
            readiness=timedelta(seconds=settings.container_timeout_seconds),
            max_per_user=settings.max_containers_per_user,
            replica_timeout=timedelta(seconds=settings.cleanup_interval_seconds),
            stuck_after=timedelta(minutes=settings.stuck_machine_minutes),
            idle_action=settings.preview_idle_action,
        )
        self._create_rate = TokenBuckets(
            settings.preview_create_rate_per_minute, settings.preview_create_burst
        )
        self._tasks = TaskSet()
        self._creating = asyncio.Semaphore(CONCURRENT_CREATES)
        # Waiters per preview, woken by every change this service makes to that preview (only).
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._endpoints: dict[str, AgentEndpoint] = {}
        self._flushed: dict[str, datetime] = {}
        # Activity seen by this process and not yet written: the reaper counts it too.
        self._seen: dict[str, datetime] = {}
        self._end_hooks: list[Callable[[Preview], None]] = []
        self._stopping: set[str] = set()  # previews this process is stopping now
        self._accounted: dict[str, datetime] = {}  # machine-seconds counted up to, per live preview

    def on_end(self, hook: Callable[[Preview], None]) -> None:
        """Call ``hook`` with each preview once this service has ended it (stopped, failed, deleted)."""
        self._end_hooks.append(hook)

    async def require_live_agent(self, caller: Caller) -> None:
        await require_live_agent(self._store, preview_id=caller.preview_id, project_id=caller.project_id)

    # --- use cases -------------------------------------------------------------------------------
    async def create(self, caller: Caller, project_id: str) -> tuple[Preview, bool]:
        """A new preview of ``project_id``, or the caller's live one; the machine is made in the background."""
        wait = self._create_rate.take(caller.subject, self._clock.now())
        if wait is not None:
            metrics.PREVIEW_CREATES.labels("rate_limited").inc()
            raise TooManyRequests(
                f"too many previews created; retry in {wait:.0f} s "
                f"(PREVIEW_CREATE_RATE_PER_MINUTE={self._settings.preview_create_rate_per_minute:g})",
                limit=self._settings.preview_create_burst,
                retry_after=wait,
            )
        project = await self._store.get_project(project_id)
        if project.owner_id != caller.subject:
            raise NotFound(f"project {project_id} not found")
        now = self._clock.now()
        preview = Preview(
            id=new_preview_id(),
            user_id=caller.subject,
            project_id=project_id,
            state=PreviewState.PROVISIONING,
            created_at=now,
            updated_at=now,
            last_activity_at=now,
            expires_at=now + self.limits.lifetime,
            owner=self._instance,
        )
        try:
            outcome = await self._store.create_preview(preview, limit=self.limits.max_per_user)
        except QuotaExceeded:
            metrics.PREVIEW_CREATES.labels("quota").inc()
            raise
        metrics.PREVIEW_CREATES.labels("created" if outcome.created else "existing").inc()
        if outcome.created:
            with logs.bound(preview_id=preview.id, user_id=preview.user_id):
                log.info("preview created for project %s", preview.project_id)
            self._tasks.start(f"launch:{preview.id}", self._launch(preview))
        return outcome

    async def get(self, caller: Caller, preview_id: str) -> Preview:
        """The caller's preview (an operator's: anyone's, for the dashboard)."""
        preview = await self._store.find_preview(preview_id)
        if preview is None or (preview.user_id != caller.subject and not caller.operator):
            # Someone else's preview is indistinguishable from one that does not exist.
            raise NotFound(f"preview {preview_id} not found")
        return preview

    async def stage(self, preview: Preview) -> str:
        """Finer than the state while booting: what the agent is doing (fetching, installing, starting)."""
        if preview.state != PreviewState.BOOTING or preview.machine_id is None:
            return preview.state.value
        try:
            endpoint = self._endpoints.get(preview.id) or self._agent_endpoint(
                preview.id, await self._provider.get(preview.machine_id)
            )
            return (await self._agents.health(endpoint)).state
        except PreviewError:
            return preview.state.value

    async def all_previews(self) -> list[Preview]:
        """Every user's previews (for operators)."""
        return await self._store.list_previews()

    async def machines(self) -> list[Machine]:
        """The provider's machines that carry our metadata (for operators)."""
        return await self._provider.list(metadata={META_OWNER: OWNER_VALUE})

    async def list_previews(self, caller: Caller) -> list[Preview]:
        return await self._store.list_previews(user_id=caller.subject)

    async def delete(self, caller: Caller, preview_id: str) -> Preview:
        preview = await self.get(caller, preview_id)
        reason = "deleted by its owner" if preview.user_id == caller.subject else "stopped by an operator"
        return await self.stop(preview, reason)

    async def extend(self, preview_id: str, minutes: float) -> Preview:
        """An operator's extension of a live preview's lifetime by ``minutes``."""
        preview = await self._store.find_preview(preview_id)
        if preview is None:
            raise NotFound(f"preview {preview_id} not found")
        if not preview.is_live:
            raise PreviewGone(f"preview {preview_id} is {preview.state.value}; it cannot be extended")
        longer = preview.expires_at + timedelta(minutes=minutes)
        updated = await self._update(preview_id, expect=LIVE_STATES, expires_at=longer)
        if updated is None:
            raise PreviewGone(f"preview {preview_id} ended meanwhile")
        return updated

    async def all_events(self, *, after_id: int) -> list[tuple[int, PreviewEvent]]:
        """Every preview's state changes past ``after_id`` (for operators)."""
        return await self._store.events_after(after_id)

    async def last_event_id(self) -> int:
        return await self._store.last_event_id()

    async def destroy_machine(self, machine_id: str) -> None:
        """An operator's destroy of one of our machines; the next maintenance pass settles its
        preview (``its machine is gone``)."""
        if not any(m.id == machine_id for m in await self.machines()):
            raise NotFound(f"machine {machine_id} is not one of ours")
        await self._provider.destroy(machine_id, force=True)

    async def keepalive(self, caller: Caller, preview_id: str) -> Preview:
        preview = await self.get(caller, preview_id)
        if not preview.is_live:
            raise PreviewGone(f"preview {preview_id} is {preview.state.value}; create a new one")
        now = self._clock.now()
        await self._store.touch(preview_id, now)
        self._flushed[preview_id] = now
        if preview.state == PreviewState.SUSPENDED:
            # Someone's editor is open on it: wake it now (in the background), so that their next
            # edits reach its agent.
            with contextlib.suppress(Unavailable):
                return await self.resumed(preview, timeout=0)
        return await self._store.get_preview(preview_id)

    async def logs(self, caller: Caller, preview_id: str, *, tail: int) -> list[dict[str, str]]:
        preview = await self.get(caller, preview_id)
        if preview.state == PreviewState.READY or preview.state == PreviewState.BOOTING:
            try:
                return await self._agents.logs(await self._endpoint(preview), tail=tail)
            except (AgentError, ProviderError):
                pass
        lines = list(preview.failure_logs)
        if not lines and preview.machine_id and preview.is_live:
            lines = await self._provider.logs(preview.machine_id, tail=tail)
        return [{"stream": "console", "line": line} for line in lines[-tail:]]

    async def events(
        self, caller: Caller, preview_id: str, *, after_id: int = 0
    ) -> list[tuple[int, PreviewEvent]]:
        await self.get(caller, preview_id)
        return list(await self._store.events(preview_id, after_id=after_id))

    # --- routing ---------------------------------------------------------------------------------
    async def route(self, preview_id: str, *, wait: float) -> AgentEndpoint:
        """Where to send a request for ``preview_id``; waits up to ``wait`` s for one still booting."""
        preview = await self._rows.preview(preview_id)
        if preview is None:
            raise NotFound(f"no preview {preview_id}")
        if preview.state in BOOTING_STATES:
            preview = await self.settled(preview_id, timeout=wait)
            if preview.state in BOOTING_STATES:
                raise Unavailable(f"preview {preview_id} is still {preview.state.value}; retry shortly")
        if preview.state == PreviewState.SUSPENDED:
            preview = await self.resumed(preview, timeout=wait)
        if preview.state != PreviewState.READY:
            reason = f": {preview.failure_reason}" if preview.failure_reason else ""
            raise PreviewGone(f"preview {preview_id} is {preview.state.value}{reason}")
        return await self._endpoint(preview)

    async def resumed(self, preview: Preview, *, timeout: float) -> Preview:
        """A suspended preview resumed (by one task, whoever asks), once it serves again or has
        failed; ``Unavailable`` after ``timeout`` s while it still resumes (and it goes on)."""
        if not self._tasks.running(f"resume:{preview.id}"):
            self._tasks.start(f"resume:{preview.id}", self._resume(preview))
        preview = await self.wait_for(
            preview.id, lambda p: p.state != PreviewState.SUSPENDED, timeout=timeout
        )
        if preview.state == PreviewState.SUSPENDED:
            raise Unavailable(f"preview {preview.id} is still resuming; retry shortly")
        return preview

    def resuming(self, preview_id: str) -> bool:
        """Whether this process is resuming the preview now."""
        return self._tasks.running(f"resume:{preview_id}")

    async def _resume(self, preview: Preview) -> None:
        # The caller may have read the row before an earlier resume wrote it.
        current = await self._store.find_preview(preview.id)
        if current is None or current.state != PreviewState.SUSPENDED or preview.machine_id is None:
            return
        with logs.bound(preview_id=preview.id, user_id=preview.user_id, machine_id=preview.machine_id):
            began = time.monotonic()
            try:
                await self._provider.resume(preview.machine_id)
                machine = await self._provider.get(preview.machine_id)
                # A machine booted afresh may be reached anew (the emulator's backing sandbox is).
                self._endpoints.pop(preview.id, None)
                endpoint = await self._endpoint(preview)
            except ProviderError as exc:
                await self.fail(preview.id, f"its machine did not resume: {exc.message}")
                return
            # The agent answers at once when the machine kept its memory; after a fresh boot (Fly's
            # fallback) it installs and starts the dev server again, within the readiness limit.
            seconds = int(self.limits.readiness.total_seconds())
            deadline = self._clock.now() + self.limits.readiness
            late = f"not serving within {seconds} s of resuming (CONTAINER_TIMEOUT_SECONDS)"
            if not await self._agent_serving(preview, machine, endpoint, deadline=deadline, late=late):
                return
            took = time.monotonic() - began
            now = self._clock.now()
            self._seen[preview.id] = now
            resumed = await self._update(
                preview.id,
                expect={PreviewState.SUSPENDED},
                state=PreviewState.READY,
                last_activity_at=now,
                updated_at=now,
                detail=f"resumed in {took * 1000:.0f} ms",
            )
            if resumed is not None:
                metrics.RESUME_SECONDS.observe(took)
                log.info("preview resumed in %.0f ms", took * 1000)

    async def suspend(self, preview: Preview, reason: str) -> Preview:
        """Suspend an idle preview's machine until its next request; stop it where the machine
        cannot be suspended."""
        with logs.bound(preview_id=preview.id, user_id=preview.user_id, machine_id=preview.machine_id):
            if preview.machine_id is None:
                return await self._stop(preview, reason)
            seen = max(preview.last_activity_at, self._seen.get(preview.id, preview.last_activity_at))
            try:
                suspended = await self._provider.suspend(preview.machine_id)
            except ProviderError as exc:
                log.warning(
                    "could not suspend machine %s (%s): stopping the preview", preview.machine_id, exc.message
                )
                suspended = False
            if not suspended:
                return await self._stop(preview, reason)
            row = await self._update(
                preview.id,
                expect={PreviewState.READY},
                state=PreviewState.SUSPENDED,
                updated_at=self._clock.now(),
                detail=f"suspended: {reason}",
            )
            if row is None:  # it moved on meanwhile (a delete): whatever moved it finishes the job
                return await self._store.get_preview(preview.id)
            log.info("preview suspended: %s", reason)
            if self._seen.get(preview.id, seen) > seen:
                # A request came while the machine froze: it waits on a frozen agent; thaw at once.
                with contextlib.suppress(Unavailable):
                    return await self.resumed(row, timeout=0)
            return row

    async def wait_for(
        self, preview_id: str, condition: Callable[[Preview], bool], *, timeout: float
    ) -> Preview:
        """The preview once ``condition`` holds, or as it is after ``timeout`` seconds."""
        changed = asyncio.Event()
        waiters = self._waiters.setdefault(preview_id, set())
        waiters.add(changed)
        try:
            preview = await self._store.get_preview(preview_id)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    while not condition(preview):
                        if preview.owner in (None, self._instance):
                            await changed.wait()
                        else:
                            # Another replica's writes wake nobody here: read the row again soon.
                            with contextlib.suppress(TimeoutError):
                                await asyncio.wait_for(changed.wait(), OTHER_REPLICA_POLL_SECONDS)
                        changed.clear()
                        preview = await self._store.get_preview(preview_id)
            return preview
        finally:
            waiters.discard(changed)
            if not waiters:
                self._waiters.pop(preview_id, None)

    @contextlib.contextmanager
    def changes(self, preview_id: str) -> Iterator[asyncio.Event]:
        """An event set on every change this service makes to ``preview_id`` (the holder clears it).
        Waiting on it reads nothing, so a waiter may be cancelled at any point: a read cancelled
        half-way makes SQLAlchemy leave a connection-closing task behind."""
        changed = asyncio.Event()
        waiters = self._waiters.setdefault(preview_id, set())
        waiters.add(changed)
        try:
            yield changed
        finally:
            waiters.discard(changed)
            if not waiters:
                self._waiters.pop(preview_id, None)

    async def settled(self, preview_id: str, *, timeout: float) -> Preview:
        """The preview once it is no longer provisioning or booting (or after ``timeout`` s)."""
        return await self.wait_for(preview_id, lambda p: p.state not in BOOTING_STATES, timeout=timeout)

    async def ended(self, preview_id: str, *, timeout: float) -> Preview:
        """The preview once it has stopped or failed (or after ``timeout`` s)."""
        return await self.wait_for(preview_id, lambda p: not p.is_live, timeout=timeout)

    def record_activity(self, preview_id: str) -> None:
        """Called by the router on every request and websocket frame; cheap, written in batches."""
        now = self._clock.now()
        self._seen[preview_id] = now
        last = self._flushed.get(preview_id)
        if last is None or now - last >= ACTIVITY_FLUSH:
            self._flushed[preview_id] = now
            self._tasks.start(f"touch:{preview_id}", self._store.touch(preview_id, now))

    async def _endpoint(self, preview: Preview) -> AgentEndpoint:
        cached = self._endpoints.get(preview.id)
        if cached is not None:
            return cached
        if preview.machine_id is None:
            raise Unavailable(f"preview {preview.id} has no machine yet")
        endpoint = self._agent_endpoint(preview.id, await self._provider.get(preview.machine_id))
        self._endpoints[preview.id] = endpoint
        return endpoint

    def _agent_endpoint(self, preview_id: str, machine: Machine) -> AgentEndpoint:
        """The machine's agent as the provider reaches it, with the proof that a request is ours (the
        router's replays carry it too)."""
        endpoint = self._provider.endpoint(machine)
        return replace(endpoint, headers={**endpoint.headers, ORIGIN_HEADER: self.origin_secret(preview_id)})

    def origin_secret(self, preview_id: str) -> str:
        return self._issuer.origin_secret(preview_id)

    # --- lifecycle -------------------------------------------------------------------------------
    def machine_spec(self, preview: Preview, *, cache_key: str | None = None) -> MachineSpec:
        token, origin_secret = self._credentials(preview)
        env = {
            "PROJECT_ID": preview.project_id,
            "PREVIEW_ID": preview.id,
            "SNAPSHOT_URL": f"{self._settings.orchestrator_url}/v1/projects/{preview.project_id}/snapshot",
            "AGENT_TOKEN": token,
            "AGENT_ORIGIN_SECRET": origin_secret,
        }
        metadata = {
            META_OWNER: OWNER_VALUE,
            **self._preview_metadata(preview),
            META_INSTANCE: self._instance,
            META_CREATE_TAG: f"{preview.id}-{secrets.token_hex(4)}",
        }
        return machine_spec(self._settings, env=env, metadata=metadata, cache_key=cache_key)

    def _credentials(self, preview: Preview) -> tuple[str, str]:
        """The agent token and origin secret of ``preview``'s machine."""
        token = self._issuer.mint_agent(
            preview_id=preview.id,
            project_id=preview.project_id,
            ttl_seconds=self._settings.lifetime_seconds + 600,
        )
        return token, self._issuer.origin_secret(preview.id)

    @staticmethod
    def _preview_metadata(preview: Preview) -> dict[str, str]:
        return {
            META_PREVIEW_ID: preview.id,
            META_USER_ID: preview.user_id,
            META_PROJECT_ID: preview.project_id,
        }

    async def _cache_key(self, preview: Preview) -> str | None:
        """Dependencies are shared only between previews of one owner: a sandbox can write to its
        node_modules, so another user must never start from what it left."""
        key = await self._store.dependencies_key(preview.project_id)
        if key is None:
            return None
        return hashlib.sha256(f"{preview.user_id}\0{key}".encode()).hexdigest()[:32]

    async def _launch(self, preview: Preview) -> None:
        # Its own task: what is bound here is on this preview's lines alone (velocity.logs).
        logs.bind(preview_id=preview.id, user_id=preview.user_id)
        # A burst of thousands queues here, in order, rather than as thousands of calls waiting
        # for the provider's and the database's connections until they time out.
        async with self._creating:
            claimed = await self._claim_pooled(preview)
            if claimed is not None:
                machine = claimed.machine
                how = "installing what differs" if claimed.dependencies_changed else "dev server running"
                detail = f"pooled machine {machine.id} claimed ({how})"
            else:
                try:
                    spec = self.machine_spec(preview, cache_key=await self._cache_key(preview))
                    with metrics.MACHINE_CREATE.labels(self._provider.name).time():
                        machine = await self._provider.create(spec)
                except PreviewError as exc:
                    await self.fail(preview.id, f"could not create a machine: {exc.message}")
                    return
                detail = f"machine {machine.id} created"
            booting = await self._update(
                preview.id,
                expect={PreviewState.PROVISIONING},
                state=PreviewState.BOOTING,
                machine_id=machine.id,
                updated_at=self._clock.now(),
                detail=detail,
            )
        logs.bind(machine_id=machine.id)
        if claimed is not None and self.pool is not None:
            await self.pool.recorded(claimed.entry)  # the preview's now, or destroyed just below
        if booting is None:  # deleted while the machine was being made
            await self._destroy(machine.id)
            return
        await self._await_ready(booting, machine)

    async def _claim_pooled(self, preview: Preview) -> Claimed | None:
        if self.pool is None:
            return None
        token, origin_secret = self._credentials(preview)
        return await self.pool.claim(
            preview, token=token, origin_secret=origin_secret, metadata=self._preview_metadata(preview)
        )

    async def _await_ready(self, preview: Preview, machine: Machine) -> None:
        try:
            await self._serving(preview, machine)
        except ProviderError as exc:
            # The machine failed to start, or the provider cannot say where its agent listens.
            await self.fail(preview.id, f"its machine did not start: {exc.message}")

    async def _serving(self, preview: Preview, machine: Machine) -> None:
        deadline = preview.created_at + self.limits.readiness
        # One long wait on the provider (Fly's Machines API ``wait``) rather than polling the agent
        # of a machine that is not running yet; at once for one that runs (an adopted machine),
        # whose agent's address some providers learn only so.
        with contextlib.suppress(Unavailable, NotFound):
            remaining = (deadline - self._clock.now()).total_seconds()
            await self._provider.wait(
                machine.id, state=MachineState.STARTED, timeout=max(1.0, min(remaining, 60.0))
            )
        endpoint = self._agent_endpoint(preview.id, machine)
        seconds = int(self.limits.readiness.total_seconds())
        late = f"not serving within {seconds} s (CONTAINER_TIMEOUT_SECONDS)"
        if not await self._agent_serving(preview, machine, endpoint, deadline=deadline, late=late):
            return
        now = self._clock.now()
        ready = await self._update(
            preview.id,
            expect={PreviewState.BOOTING},
            state=PreviewState.READY,
            ready_at=now,
            updated_at=now,
            last_activity_at=now,
            detail=f"serving after {(now - preview.created_at).total_seconds():.2f} s",
        )
        self._endpoints[preview.id] = endpoint
        if ready is not None:
            took = (now - preview.created_at).total_seconds()
            metrics.TIME_TO_READY.observe(took)
            log.info("preview ready after %.2f s", took)
            self._tasks.start(f"watch:{preview.id}", self._watch(ready, machine.id))

    async def _agent_serving(
        self, preview: Preview, machine: Machine, endpoint: AgentEndpoint, *, deadline: datetime, late: str
    ) -> bool:
        """Ask the agent until it says its dev server serves (True); else fail the preview (False):
        the agent reports a failure, the machine stops, or ``deadline`` passes (the reason ``late``)."""
        retry = AGENT_RETRY_SECONDS
        checked = self._clock.now()
        while True:
            remaining = (deadline - self._clock.now()).total_seconds()
            if remaining <= 0:
                await self.fail(preview.id, late)
                return False
            try:
                health = await self._agents.health(endpoint, wait_ready=min(remaining, AGENT_POLL_SECONDS))
            except AgentError:
                if (self._clock.now() - checked).total_seconds() >= MACHINE_CHECK_SECONDS:
                    checked = self._clock.now()
                    reason = await self._machine_exit(machine.id, born=machine.created_at)
                    if reason is not None:
                        await self.fail(preview.id, reason)
                        return False
                await self._clock.sleep(retry)
                retry = min(retry * 2, AGENT_RETRY_MAX_SECONDS)
                continue
            if health.failed:
                await self.fail(preview.id, f"agent reported failure: {health.detail or 'no detail'}")
                return False
            if health.ready:
                return True
            # A long-poll that came back early (an agent without long-poll, a proxy's timeout):
            # pause briefly rather than spin.
            await self._clock.sleep(AGENT_RETRY_SECONDS)

    async def _machine_exit(self, machine_id: str, *, born: datetime | None = None) -> str | None:
        """Why the machine no longer runs, or ``None`` while it still does (or, ``born`` moments ago,
        may not be visible yet)."""
        try:
            machine = await self._provider.get(machine_id)
        except NotFound:
            if born is not None and (self._clock.now() - born).total_seconds() < NEWBORN_SECONDS:
                return None
            return f"machine {machine_id} disappeared"
        if machine.state in STOPPED_OR_BEYOND:
            return f"machine {machine.state.value}: {machine.exit_reason or 'no reason given'}"
        return None

    async def _watch(self, preview: Preview, machine_id: str) -> None:
        """Fail the preview when its machine stops on its own (out of memory, agent crash...)."""
        while True:
            try:
                await self._provider.wait(machine_id, state=MachineState.STOPPED, timeout=60)
            except Unavailable:
                continue  # a wait times out after at most 60 s on Fly; wait again
            except NotFound:
                pass
            current = await self._store.find_preview(preview.id)
            if current is None or current.state not in (PreviewState.READY, PreviewState.SUSPENDED):
                return  # we are stopping it ourselves
            reason = await self._machine_exit(machine_id)
            if reason is None:
                continue
            await self.fail(preview.id, reason)
            return

    async def fail(self, preview_id: str, reason: str) -> Preview | None:
        """End a live preview as ``failed``, keeping its last log lines, and destroy its machine."""
        preview = await self._store.find_preview(preview_id)
        if preview is None or not preview.is_live:
            return preview
        with logs.bound(preview_id=preview.id, user_id=preview.user_id, machine_id=preview.machine_id):
            return await self._fail(preview, reason)

    async def _fail(self, preview: Preview, reason: str) -> Preview | None:
        preview_id = preview.id
        lines = await self._last_lines(preview)
        failed = await self._update(
            preview_id,
            expect=LIVE_STATES,
            state=PreviewState.FAILED,
            failure_reason=reason,
            failure_logs=lines,
            updated_at=self._clock.now(),
            detail=reason,
        )
        log.warning("preview %s failed: %s", preview_id, reason)
        await self._release(preview)
        return failed

    async def stop(self, preview: Preview, reason: str) -> Preview:
        """Stop a preview for good: ``stopping``, machine destroyed, ``stopped``."""
        with logs.bound(preview_id=preview.id, user_id=preview.user_id, machine_id=preview.machine_id):
            return await self._stop(preview, reason)

    async def _stop(self, preview: Preview, reason: str) -> Preview:
        stopping = await self._update(
            preview.id,
            expect=LIVE_STATES - {PreviewState.STOPPING},
            state=PreviewState.STOPPING,
            updated_at=self._clock.now(),
            detail=reason,
        )
        if stopping is None:
            return await self._store.get_preview(preview.id)
        self._stopping.add(preview.id)
        try:
            stopped = await self._finish_stop(stopping, why=end_reason(reason))
        finally:
            self._stopping.discard(preview.id)
        log.info("preview stopped: %s", reason)
        return stopped

    async def _finish_stop(self, stopping: Preview, *, why: str | None = None) -> Preview:
        """From ``stopping``: keep the last log lines, destroy the machine, ``stopped``."""
        # Kept with the row, so `previews logs` still shows how it ended once the machine is gone.
        lines: tuple[str, ...] = ()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LAST_LINES_SECONDS):
                lines = await self._last_lines(stopping)
        await self._release(stopping)
        stopped = await self._update(
            stopping.id,
            expect={PreviewState.STOPPING},
            state=PreviewState.STOPPED,
            updated_at=self._clock.now(),
            detail="machine destroyed",
            failure_logs=lines,
            why=why,
        )
        return stopped or await self._store.get_preview(stopping.id)

    async def _release(self, preview: Preview) -> None:
        self._tasks.cancel(f"launch:{preview.id}")
        self._tasks.cancel(f"watch:{preview.id}")
        self._endpoints.pop(preview.id, None)
        self._flushed.pop(preview.id, None)
        self._seen.pop(preview.id, None)
        if preview.machine_id:
            await self._destroy(preview.machine_id)

    async def _destroy(self, machine_id: str) -> None:
        try:
            await self._provider.destroy(machine_id, force=True)
        except PreviewError as exc:
            # The reconciler destroys machines that no live preview owns on its next pass.
            log.warning("destroying machine %s failed (%s); the reconciler will retry", machine_id, exc)

    async def _update(self, preview_id: str, *, why: str | None = None, **changes: Any) -> Preview | None:
        """Every state change of the service goes through here, so waiters hear of it. ``why``: the
        kind of end an ending change is counted as (by default, its ``detail``'s)."""
        updated = await self._store.update_preview(preview_id, **changes)
        self._rows.forget(preview_id)
        for waiter in self._waiters.get(preview_id, ()):
            waiter.set()
        if updated is not None and not updated.is_live and "state" in changes:
            kind = why or end_reason(str(changes.get("detail") or ""))
            metrics.PREVIEW_ENDS.labels(updated.state.value, kind).inc()
        if updated is not None and not updated.is_live:
            for hook in self._end_hooks:
                hook(updated)
        return updated

    async def _last_lines(self, preview: Preview, tail: int = 50) -> tuple[str, ...]:
        if preview.machine_id is None:
            return ()
        try:
            if preview.state == PreviewState.SUSPENDED:
                raise Unavailable("a suspended agent does not answer")
            endpoint = self._endpoints.get(preview.id) or self._agent_endpoint(
                preview.id, await self._provider.get(preview.machine_id)
            )
            entries = await self._agents.logs(endpoint, tail=tail)
            return tuple(str(e.get("line", "")) for e in entries)
        except PreviewError:
            pass
        try:
            return tuple(await self._provider.logs(preview.machine_id, tail=tail))
        except PreviewError:
            return ()

    # --- maintenance (called by the loops) -------------------------------------------------------
    async def reap(self) -> list[str]:
        """Stop expired and idle previews, fail stuck ones; returns what was done, one line each."""
        done = []
        now = self._clock.now()
        for preview in await self._store.list_previews(states=LIVE_STATES):
            seen = self._seen.get(preview.id)
            if seen is not None and seen > preview.last_activity_at:
                preview = replace(preview, last_activity_at=seen)
            decision = verdict(preview, now, self.limits)
            if decision is None:
                continue
            if decision.action == "fail":
                await self.fail(preview.id, decision.reason)
            elif decision.action == "suspend":
                await self.suspend(preview, decision.reason)
            else:
                await self.stop(preview, decision.reason)
            metrics.MAINTENANCE_ACTIONS.labels(decision.action, end_reason(decision.reason)).inc()
            done.append(f"{decision.action} {preview.id}: {decision.reason}")
        return done

    async def reconcile(self) -> list[str]:
        """Make machines match previews: destroy orphans, fail previews whose machine is gone,
        and pick up previews this process did not start (after a restart)."""
        done = []
        machines = await self._provider.list(metadata={META_OWNER: OWNER_VALUE})
        live = await self._store.list_previews(states=LIVE_STATES)
        pooled = await self.pool.kept() if self.pool is not None else set()
        done += await self._destroy_stuck(machines, live)
        destroyed = set()
        for machine in machines_to_destroy(machines, live, pooled=pooled):
            destroyed.add(machine.id)
            await self._destroy(machine.id)
            metrics.MAINTENANCE_ACTIONS.labels("destroy", "orphan").inc()
            done.append(f"destroyed orphan machine {machine.id}")
        by_id = {m.id: m for m in machines}
        # A preview's own machine is the one it recorded; the one its metadata names only while it
        # has none yet (any other was an orphan, destroyed above).
        by_preview = {m.metadata.get(META_PREVIEW_ID): m for m in machines if m.id not in destroyed}
        # Another replica that still beats launches and watches its own previews; those of replicas
        # gone quiet (and of none) are this one's to finish.
        others = await self._store.live_instances(since=self._clock.now() - self.limits.replica_timeout)
        others.discard(self._instance)
        if self.pool is not None:
            done += await self.pool.reconcile(machines, replicas=others)
        for preview in live:
            if preview.owner in others:
                continue
            if preview.state == PreviewState.STOPPING:
                # A stop its replica did not finish (killed between the two writes): finish it.
                if preview.owner not in (None, self._instance) or preview.id not in self._stopping:
                    # Its machine may have come after the stop began (a create in flight then).
                    made = by_preview.get(preview.id)
                    if preview.machine_id is None and made is not None:
                        preview = replace(preview, machine_id=made.id)
                    await self._finish_stop(preview)
                    metrics.MAINTENANCE_ACTIONS.labels("stop", "unfinished").inc()
                    done.append(f"finished stopping {preview.id}")
                continue
            if self._tasks.running(f"launch:{preview.id}"):
                continue
            found = by_id.get(preview.machine_id) if preview.machine_id else by_preview.get(preview.id)
            if found is None:
                # The list was read before the rows, and the pass takes a while: the row may have
                # moved on since (a launch that finished, a stop), with a machine the list missed.
                fresh = await self._store.find_preview(preview.id)
                if fresh is None or not fresh.is_live or fresh.owner in others:
                    continue
                preview = fresh
                found = await self._made_since(preview)
            if found is None or found.state in STOPPED_OR_BEYOND:
                reason = "its machine is gone" if found is None else await self._machine_exit(found.id)
                await self.fail(preview.id, reason or "its machine is gone")
                metrics.MAINTENANCE_ACTIONS.labels("fail", "machine_gone").inc()
                done.append(f"failed {preview.id}: {reason}")
                continue
            machine = found
            if preview.state in (PreviewState.PROVISIONING, PreviewState.BOOTING):
                adopted = await self._update(
                    preview.id,
                    expect={PreviewState.PROVISIONING, PreviewState.BOOTING},
                    state=PreviewState.BOOTING,
                    machine_id=machine.id,
                    owner=self._instance,
                    updated_at=self._clock.now(),
                    detail=f"machine {machine.id} adopted",
                )
                if adopted is not None:
                    self._tasks.start(f"launch:{preview.id}", self._await_ready(adopted, machine))
                    metrics.MAINTENANCE_ACTIONS.labels("adopt", "booting").inc()
                    done.append(f"adopted {preview.id} (booting)")
            elif not self._tasks.running(f"watch:{preview.id}"):
                if preview.owner != self._instance:
                    await self._update(preview.id, expect={PreviewState.READY}, owner=self._instance)
                self._tasks.start(f"watch:{preview.id}", self._watch(preview, machine.id))
                metrics.MAINTENANCE_ACTIONS.labels("adopt", "ready").inc()
                done.append(f"adopted {preview.id} (ready)")
        return done

    async def _made_since(self, preview: Preview) -> Machine | None:
        """The machine of a preview that the machine list missed: it is read before the rows (so
        that a machine made meanwhile is never taken for an orphan), and a create that finished
        since has a machine the list does not show. ``None``: it is gone indeed."""
        if preview.machine_id is None:
            return None
        try:
            return await self._provider.get(preview.machine_id)
        except NotFound:
            return None

    async def _destroy_stuck(self, machines: list[Machine], live: list[Preview]) -> list[str]:
        """Destroy (forcibly) machines stuck in a transient state past ``STUCK_MACHINE_MINUTES``, failing
        the preview one served, and report each; ``machines`` and ``live`` are left without them."""
        done = []
        for machine, how_long in stuck_machines(machines, self._clock.now(), self.limits.stuck_after):
            owner = next((p for p in live if machine.id == p.machine_id), None)
            log.warning("machine %s is stuck (%s): destroying it", machine.id, how_long)
            if owner is not None:
                await self.fail(
                    owner.id, f"its machine {machine.id} was stuck ({how_long}) and was destroyed"
                )
                live.remove(owner)
            else:
                await self._destroy(machine.id)
            machines.remove(machine)
            metrics.MAINTENANCE_ACTIONS.labels("destroy", "stuck").inc()
            done.append(f"destroyed stuck machine {machine.id} ({how_long})")
        return done

    async def census(self) -> None:
        """Set the gauges of what exists now (previews by state, our machines by region and state)
        and count the machine time of live previews since the last census, by how it was spent:
        booting, running with activity in the last minute, running idle (what idle costs)."""
        counts = await self._store.count_previews()
        for state in PreviewState:
            metrics.PREVIEWS.labels(state.value).set(counts.get(state, 0))
        machines = await self._provider.list(metadata={META_OWNER: OWNER_VALUE})
        metrics.MACHINES.clear()
        if self.pool is not None:
            await self.pool.census()
        for machine in machines:
            metrics.MACHINES.labels(self._provider.name, machine.region, machine.state.value).inc()
        now = self._clock.now()
        # This replica's previews only: each replica's counters add up to the whole, not a multiple.
        live = [
            p
            for p in await self._store.list_previews(states=LIVE_STATES)
            if p.owner in (None, self._instance)
        ]
        for preview in live:
            since = self._accounted.get(preview.id, preview.created_at)
            self._accounted[preview.id] = now
            seen = max(preview.last_activity_at, self._seen.get(preview.id, preview.last_activity_at))
            if preview.state in BOOTING_STATES:
                spent = "booting"
            elif preview.state == PreviewState.SUSPENDED:
                spent = "suspended"
            else:
                spent = "running_active" if now - seen < ACTIVE_WITHIN else "running_idle"
            metrics.MACHINE_SECONDS.labels(spent).inc(max(0.0, (now - since).total_seconds()))
        for gone in self._accounted.keys() - {p.id for p in live}:
            del self._accounted[gone]

    async def stop_all(self, reason: str) -> None:
        """Stop this replica's live previews (and any nobody owns); other replicas' run on."""
        for preview in await self._store.list_previews(states=LIVE_STATES):
            if preview.owner in (None, self._instance):
                await self.stop(preview, reason)

    async def close(self) -> None:
        # A database write cancelled half-way would leave its driver thread talking to a closed loop.
        await self._tasks.finish("touch:")
        await self._tasks.close()
        if self.pool is not None:
            await self.pool.close()


async def require_live_agent(store: Store, *, preview_id: str | None, project_id: str | None) -> None:
    """An agent's token is good only while its own preview lives: it ends with the preview, and
    never speaks for another preview of the project."""
    preview = await store.find_preview(preview_id) if preview_id else None
    if preview is None or not preview.is_live or preview.project_id != project_id:
        raise Unauthorized(
            f"this agent token's preview {preview_id} has ended (or never existed): the token is revoked"
        )


def require_owner_or_agent(caller: Caller, *, owner_id: str, project_id: str) -> None:
    """Snapshots are for the project's owner and for the agents of its previews."""
    if caller.is_agent and caller.project_id == project_id:
        return
    if not caller.is_agent and caller.subject == owner_id:
        return
    raise Forbidden(f"not allowed to read project {project_id}")
