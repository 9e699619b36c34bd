"""Several orchestrator replicas on one database: one leads the loops, the lease passes on when it
dies, and no replica undoes work another is still doing. Two services share a store, a provider
and a fake clock, as two ``serve`` processes share PostgreSQL and Fly's API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from tests.service.world import ALICE, World
from velocity.clock import FakeClock
from velocity.domain import Machine, MachineSpec, PreviewState, ProviderDenied
from velocity.loops import LoopMonitor, Replica, run_maintenance
from velocity.providers.fake import FakeProvider
from velocity.service import AgentClient, PreviewService

INTERVAL = 60.0


class GatedProvider(FakeProvider):
    """Creates wait for ``gate``: a replica caught between its database row and Fly's answer."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()

    async def create(self, spec: MachineSpec) -> Machine:
        self.waiting.set()
        await self.gate.wait()
        return await super().create(spec)


@dataclass
class Pair:
    world: World
    first: PreviewService
    second: PreviewService
    provider: GatedProvider

    def replica(self, service: PreviewService) -> Replica:
        monitor = LoopMonitor(self.world.clock, service._instance)
        return Replica(self.world.store, self.world.clock, monitor, interval=INTERVAL)


@pytest.fixture
async def pair(world: World) -> AsyncIterator[Pair]:
    provider = GatedProvider(world.clock)
    settings = world.settings.model_copy(update={"container_cleanup_interval_minutes": INTERVAL / 60})

    def replica(instance: str) -> PreviewService:
        return PreviewService(
            store=world.store,
            provider=provider,
            agents=AgentClient(httpx.MockTransport(world.agents.handle)),
            issuer=world.service._issuer,
            settings=settings,
            clock=world.clock,
            instance=instance,
        )

    made = Pair(world, replica("replica-a"), replica("replica-b"), provider)
    yield made
    provider.gate.set()
    await made.first.close()
    await made.second.close()


async def test_one_replica_leads_and_another_takes_over_within_an_interval(pair: Pair) -> None:
    """The first to beat holds the lease; while it renews, the other stands by. When it stops
    beating, the other leads within one interval; a replica that leaves hands over at once."""
    a, b = pair.replica(pair.first), pair.replica(pair.second)
    assert await a.beat() is True
    assert await b.beat() is False
    for _ in range(6):
        await pair.world.clock.advance(a.period)
        assert (await a.beat(), await b.beat()) == (True, False)
    # a dies: within one interval of its last renewal, b's heartbeat finds the lease expired.
    elapsed = 0.0
    while not await b.beat():
        await pair.world.clock.advance(b.period)
        elapsed += b.period
    assert elapsed <= INTERVAL
    assert await a.beat() is False, "a replica coming back does not take the lease from the leader"
    await b.leave()
    assert await a.beat() is True


async def test_the_leader_leaves_another_replica_s_preview_alone_while_that_replica_beats(pair: Pair) -> None:
    """Replica a is between writing a preview and Fly's answer to its create. The leader b finds
    the preview with no machine: it neither fails it nor adopts it while a beats. Once a is gone
    quiet for the replica timeout, the preview is b's to settle: with no machine, it fails."""
    a, b = pair.replica(pair.first), pair.replica(pair.second)
    await a.beat()
    await b.beat()
    preview, _ = await pair.first.create(ALICE, "alice-one")
    await pair.provider.waiting.wait()

    assert await pair.second.reconcile() == []
    assert (await pair.world.store.get_preview(preview.id)).state == PreviewState.PROVISIONING

    # a dies mid-create; its machine never comes. After the timeout, b is the preview's owner.
    await pair.first.close()
    for _ in range(4):
        await pair.world.clock.advance(b.period)
        await b.beat()
    done = await pair.second.reconcile()
    assert done == [f"failed {preview.id}: its machine is gone"]


async def test_the_leader_adopts_a_booting_preview_of_a_replica_gone_quiet(pair: Pair) -> None:
    """A preview whose machine exists, left booting by a replica that died, is finished by the
    leader: owned by it, watched by it, ready."""
    pair.provider.gate.set()
    pair.world.agents.state = None  # the agent does not answer yet: the preview stays booting
    a, b = pair.replica(pair.first), pair.replica(pair.second)
    await a.beat()
    await b.beat()
    preview, _ = await pair.first.create(ALICE, "alice-one")
    await pair.world.agents.asked.wait()
    assert await pair.second.reconcile() == [], "a still beats: its preview is its own"

    await pair.first.close()
    for _ in range(4):
        await pair.world.clock.advance(b.period)
        await b.beat()
    pair.world.agents.state = "ready"
    assert await pair.second.reconcile() == [f"adopted {preview.id} (booting)"]
    ready = await pair.second.settled(preview.id, timeout=5)
    assert (ready.state, ready.owner) == (PreviewState.READY, "replica-b")


async def test_a_replica_stopping_stops_its_own_previews_only(pair: Pair) -> None:
    """``serve`` without ``--keep-previews`` stops what it runs at exit, not another replica's."""
    pair.provider.gate.set()
    mine, _ = await pair.first.create(ALICE, "alice-one")
    theirs, _ = await pair.second.create(ALICE, "alice-two")
    await pair.first.settled(mine.id, timeout=5)
    await pair.second.settled(theirs.id, timeout=5)
    await pair.first.stop_all("replica a is shutting down")
    assert (await pair.world.store.get_preview(mine.id)).state == PreviewState.STOPPED
    assert (await pair.world.store.get_preview(theirs.id)).state == PreviewState.READY


class Broken:
    """A service whose passes fail as told."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.passes = 0

    async def reconcile(self) -> list[str]:
        self.passes += 1
        raise self.error

    async def reap(self) -> list[str]:
        return []


async def test_the_provider_s_refusal_is_reported_and_tried_again_not_fatal(world: World) -> None:
    """A revoked FLY_API_TOKEN fails each pass: /healthz's loop says so, and the loop goes on."""
    monitor = LoopMonitor(world.clock, "replica-a")
    replica = Replica(world.store, world.clock, monitor, interval=INTERVAL)
    await replica.beat()
    broken = Broken(ProviderDenied("Fly API list answered 401: token revoked"))
    loop = asyncio.create_task(
        run_maintenance(broken, world.clock, replica, monitor, interval=INTERVAL)  # type: ignore[arg-type]
    )
    try:
        for passes in (1, 2, 3):
            await world.clock.advance(INTERVAL)
            assert broken.passes >= passes
        health = monitor.loops["maintenance"]
        assert (health.state, health.failures) == ("failing", broken.passes)
        assert "token revoked" in (health.last_error or "")
        assert not monitor.healthy()
        assert not loop.done()
    finally:
        loop.cancel()


async def test_a_bug_in_a_pass_ends_the_loop_with_its_error(world: World) -> None:
    """Anything but the provider's or the database's failures is a bug: the loop raises it, and the
    supervisor above it stops the process (``Running.wait``) rather than serve with no reaper."""
    monitor = LoopMonitor(world.clock, "replica-a")
    replica = Replica(world.store, world.clock, monitor, interval=INTERVAL)
    await replica.beat()
    broken = Broken(KeyError("machine_id"))
    with pytest.raises(KeyError, match="machine_id"):
        await run_maintenance(broken, world.clock, replica, monitor, interval=INTERVAL)  # type: ignore[arg-type]


async def test_a_replica_that_does_not_lead_stands_by(world: World) -> None:
    """Only the lease holder passes; the other's maintenance loop says ``standby``."""
    leader = Replica(world.store, world.clock, LoopMonitor(world.clock, "a"), interval=INTERVAL)
    monitor = LoopMonitor(world.clock, "b")
    standby = Replica(world.store, world.clock, monitor, interval=INTERVAL)
    assert await leader.beat()
    assert not await standby.beat()
    broken = Broken(KeyError("never raised: a standby does not pass"))
    loop = asyncio.create_task(
        run_maintenance(broken, world.clock, standby, monitor, interval=INTERVAL)  # type: ignore[arg-type]
    )
    try:
        await world.clock.advance(standby.period)
        assert broken.passes == 0
        assert monitor.loops["maintenance"].state == "standby"
        assert monitor.healthy()
    finally:
        loop.cancel()
