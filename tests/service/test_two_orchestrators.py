"""Two orchestrators on one PostgreSQL database, as two ``serve`` processes on Fly: each composed as
``serve`` composes it (``Runtime``), sharing the database and one machine backend (simulated
machines, as two replicas share Fly's API), with agents played by a mock."""

from __future__ import annotations

import asyncio
import io
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.store.conftest import postgres_store
from velocity.auth import Caller
from velocity.domain import PreviewState, QuotaExceeded
from velocity.providers.simulated import SimulatedProvider
from velocity.runtime import Runtime
from velocity.service import AgentClient
from velocity.settings import Settings

INTERVAL_MINUTES = 0.02  # 1.2 s: heartbeats every 0.4 s, a leader replaced within 1.2 s


class Agents:
    """Every machine's agent: installing until ``serving`` is set, then ready."""

    def __init__(self) -> None:
        self.serving = True

    def handle(self, request: httpx.Request) -> httpx.Response:
        state = "ready" if self.serving else "installing"
        return httpx.Response(200, json={"state": state, "detail": None, "protocol": 1})


def archive() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = b'{"name": "app"}'
        info = tarfile.TarInfo("package.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class Replicas:
    def __init__(self, tmp_path: Path, database: str) -> None:
        self.tmp_path = tmp_path
        self.database = database
        self.provider = SimulatedProvider()
        self.agents = Agents()
        self.runtimes: list[Runtime] = []

    async def start(self, limit: int = 3) -> Runtime:
        settings = Settings(
            # One data directory: the replicas share the project files and the signing key, as
            # replicas on Fly share the object store and Supabase's keys.
            velocity_data_dir=self.tmp_path,
            database_url=self.database,
            container_cleanup_interval_minutes=INTERVAL_MINUTES,
            max_containers_per_user=limit,
            preview_create_rate_per_minute=10_000,
            preview_create_burst=10_000,
            _env_file=None,  # type: ignore[call-arg]
        )
        runtime = await Runtime.open(
            settings, provider=self.provider, agents=AgentClient(httpx.MockTransport(self.agents.handle))
        )
        await runtime.start_loops()
        self.runtimes.append(runtime)
        return runtime


@pytest.fixture
async def replicas(tmp_path: Path) -> AsyncIterator[Replicas]:
    async with postgres_store() as (_store, name):
        made = Replicas(tmp_path, f"postgresql://postgres@127.0.0.1:5432/{name}")
        try:
            yield made
        finally:
            for runtime in made.runtimes:
                await runtime.close(stop_previews=True)


async def users_with_projects(runtime: Runtime, users: int, projects: int) -> list[Caller]:
    callers = [Caller(subject=f"user-{u}", role="authenticated") for u in range(users)]
    for caller in callers:
        for p in range(projects):
            await runtime.projects.import_archive(
                caller, f"{caller.subject}-{p}", name=f"p{p}", archive=archive()
            )
    return callers


async def test_quota_and_one_live_preview_per_project_hold_across_replicas(replicas: Replicas) -> None:
    """Ten users each create five projects' previews through both replicas at once, each project
    twice: each user ends with MAX_CONTAINERS_PER_USER (3) live previews, one per project, and every
    refusal is the quota's."""
    a, b = await replicas.start(), await replicas.start()
    callers = await users_with_projects(a, users=10, projects=5)
    attempts = [
        runtime.previews.create(caller, f"{caller.subject}-{p}")
        for caller in callers
        for p in range(5)
        for runtime in (a, b)
    ]
    answers = await asyncio.gather(*attempts, return_exceptions=True)
    assert all(isinstance(x, tuple | QuotaExceeded) for x in answers), answers
    for caller in callers:
        live = [p for p in await a.store.list_previews(user_id=caller.subject) if p.is_live]
        assert len(live) == 3, (caller.subject, live)
        assert len({p.project_id for p in live}) == 3


async def test_a_request_on_one_replica_waits_for_a_preview_booting_on_the_other(
    replicas: Replicas,
) -> None:
    """A preview booting on replica a; the router of replica b asks for it and is held until a marks
    it ready, then gets its machine's agent."""
    a, b = await replicas.start(), await replicas.start()
    (caller,) = await users_with_projects(a, users=1, projects=1)
    replicas.agents.serving = False
    preview, _ = await a.previews.create(caller, "user-0-0")
    routed = asyncio.create_task(b.previews.route(preview.id, wait=20))
    booting = await a.previews.wait_for(preview.id, lambda p: p.state == PreviewState.BOOTING, timeout=10)
    assert booting.state == PreviewState.BOOTING
    assert not routed.done()
    replicas.agents.serving = True
    endpoint = await asyncio.wait_for(routed, 20)
    assert endpoint.base_url.startswith(f"http://{booting.machine_id}.")


async def test_when_the_leader_dies_the_other_replica_leads_and_takes_over_its_previews(
    replicas: Replicas,
) -> None:
    """Replica a leads and owns three ready previews. Its loops stop dead (no clean leave, as in a
    SIGKILL): within an interval b holds the lease, and once a is quiet past the replica timeout,
    b owns a's previews and watches them; none was failed or lost its machine."""
    a = await replicas.start()
    b = await replicas.start()
    assert (a.monitor.leader, b.monitor.leader) == (True, False)
    (caller,) = await users_with_projects(a, users=1, projects=3)
    made = [(await a.previews.create(caller, f"user-0-{p}"))[0] for p in range(3)]
    for preview in made:
        assert (await a.previews.settled(preview.id, timeout=10)).state == PreviewState.READY

    assert a._loops is not None
    a._loops.cancel()  # a's heartbeat and maintenance stop, its lease and beats left behind
    await asyncio.gather(a._loops, return_exceptions=True)
    taken = await b.previews.wait_for(
        made[-1].id, lambda p: p.owner == b.monitor.instance, timeout=INTERVAL_MINUTES * 60 * 4
    )
    assert taken.owner == b.monitor.instance
    assert b.monitor.leader
    for preview in made:
        now = await b.store.get_preview(preview.id)
        assert (now.state, now.owner) == (PreviewState.READY, b.monitor.instance)
    assert len(await replicas.provider.list()) == 3
