"""The warm pool: machines booted ahead of any preview, each claimed once by a new preview, refilled
under MAX_MACHINES by the leader, kept out of every user's quota, never reused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.service.world import ALICE, BOB, World
from velocity.auth import TokenIssuer
from velocity.domain import ConfigError, Forbidden, MachineState, PoolState, PreviewState
from velocity.loops import maintenance_pass
from velocity.providers.base import META_POOL, META_PREVIEW_ID, META_USER_ID
from velocity.service import AgentClient, PreviewService
from velocity.service.pool import TEMPLATE_PROJECT, WarmPool, load_template

SECRET = "s" * 40


@dataclass
class Pooled:
    world: World
    service: PreviewService
    pool: WarmPool
    issuer: TokenIssuer

    async def filled(self) -> list[str]:
        """Refill, and wait until every pooled machine is ready; their machine ids."""
        await self.pool.refill(machines=0)
        for _ in range(200):
            entries = await self.world.store.list_pooled()
            if entries and all(e.state is PoolState.READY for e in entries):
                return [e.machine_id or "" for e in entries]
            await asyncio.sleep(0.01)
        raise AssertionError(f"the pool did not fill: {entries}")


def pooled_service(world: World, tmp_path: Path, *, size: int, max_machines: int = 100) -> Pooled:
    template = tmp_path / "template"
    template.mkdir(exist_ok=True)
    (template / "package.json").write_text('{"name": "template"}')
    settings = world.settings.model_copy(update={"warm_pool_size": size, "max_machines": max_machines})
    issuer = TokenIssuer(SECRET, issuer="http://127.0.0.1:8000/auth/v1")
    agents = AgentClient(httpx.MockTransport(world.agents.handle))
    common = {"store": world.store, "provider": world.provider, "agents": agents, "issuer": issuer}
    pool = WarmPool(
        **common,
        settings=settings,
        clock=world.clock,
        instance="local",
        template=load_template(template, max_bytes=1 << 20),
    )
    service = PreviewService(**common, settings=settings, clock=world.clock, pool=pool)
    return Pooled(world, service, pool, issuer)


@pytest.fixture
async def pooled(world: World, tmp_path: Path) -> AsyncIterator[Pooled]:
    running = pooled_service(world, tmp_path, size=2)
    yield running
    await running.service.close()


def creates(world: World) -> int:
    return sum(1 for call in world.provider.calls if call[0] == "create")


async def test_the_pool_boots_machines_that_belong_to_no_user(pooled: Pooled) -> None:
    machines = await pooled.filled()
    assert len(machines) == 2
    for machine_id in machines:
        machine = await pooled.world.provider.get(machine_id)
        assert META_POOL in machine.metadata
        assert META_USER_ID not in machine.metadata and META_PREVIEW_ID not in machine.metadata
    # Pooled machines count against nobody: Alice still has her whole quota.
    for name in ("one", "two", "three"):
        _, created = await pooled.service.create(ALICE, f"alice-{name}")
        assert created


async def test_a_create_claims_a_ready_machine_instead_of_making_one(pooled: Pooled) -> None:
    world = pooled.world
    pooled_machines = await pooled.filled()
    before = creates(world)
    preview, _ = await pooled.service.create(ALICE, "alice-one")
    ready = await pooled.service.settled(preview.id, timeout=5)
    assert ready.state == PreviewState.READY
    assert ready.machine_id in pooled_machines
    first, second = sorted(pooled_machines, key=lambda m: m != ready.machine_id)
    assert creates(world) == before  # no machine was made for it
    machine = await world.provider.get(first)
    assert (machine.metadata[META_PREVIEW_ID], machine.metadata[META_USER_ID]) == (preview.id, "alice")
    host, body = world.agents.claims[-1]
    assert host == f"{first}.fake"
    assert (body["preview_id"], body["project_id"]) == (preview.id, "alice-one")
    assert body["origin_secret"] == pooled.issuer.origin_secret(preview.id)
    claimant = pooled.issuer.verify(body["token"])
    assert (claimant.preview_id, claimant.project_id) == (preview.id, "alice-one")
    events = [event.detail or "" for _, event in await world.store.events(preview.id)]
    assert f"pooled machine {first} claimed (dev server running)" in events
    # The pool forgets it, and the leader's next refill replaces it.
    assert [e.machine_id for e in await world.store.list_pooled()] == [second]
    await pooled.filled()
    assert creates(world) == before + 1


async def test_a_claimed_machine_ends_with_its_preview_and_is_never_pooled_again(pooled: Pooled) -> None:
    world = pooled.world
    await pooled.filled()
    preview, _ = await pooled.service.create(ALICE, "alice-one")
    machine_id = (await pooled.service.settled(preview.id, timeout=5)).machine_id or ""
    assert META_POOL in (await world.provider.get(machine_id)).metadata
    await pooled.service.delete(ALICE, preview.id)
    assert (await world.provider.get(machine_id)).state == MachineState.DESTROYED
    assert machine_id not in [e.machine_id for e in await world.store.list_pooled()]


async def test_an_empty_pool_makes_the_create_make_a_machine(pooled: Pooled) -> None:
    world = pooled.world
    preview, _ = await pooled.service.create(ALICE, "alice-one")
    ready = await pooled.service.settled(preview.id, timeout=5)
    assert ready.state == PreviewState.READY
    machine = await world.provider.get(ready.machine_id or "")
    assert META_POOL not in machine.metadata
    assert world.agents.claims == []


async def test_a_refused_claim_destroys_the_pooled_machine_and_makes_one(pooled: Pooled) -> None:
    world = pooled.world
    pooled_machines = set(await pooled.filled())
    world.agents.refuse_claims = True
    preview, _ = await pooled.service.create(ALICE, "alice-one")
    ready = await pooled.service.settled(preview.id, timeout=5)
    assert ready.state == PreviewState.READY
    assert ready.machine_id not in pooled_machines
    states = [(await world.provider.get(m)).state for m in pooled_machines]
    assert states.count(MachineState.DESTROYED) == 1  # the one it tried
    assert len(await world.store.list_pooled()) == 1


async def test_claims_at_once_get_a_machine_each_and_never_the_same(world: World, tmp_path: Path) -> None:
    """Two replicas' services on one database, six creates at once, a pool of four: four claims
    succeed with four different machines, two creates make their own."""
    one = pooled_service(world, tmp_path, size=4)
    two = pooled_service(world, tmp_path, size=4)
    try:
        pooled_machines = set(await one.filled())
        owners = [ALICE, ALICE, ALICE, BOB, BOB, BOB]
        names = ["one", "two", "three", "one", "two", "three"]
        made = await asyncio.gather(
            *(
                (one if i % 2 else two).service.create(owner, f"{owner.subject}-{name}")
                for i, (owner, name) in enumerate(zip(owners, names, strict=True))
            )
        )
        ready = [await one.service.settled(preview.id, timeout=5) for preview, _ in made]
        machines = [p.machine_id for p in ready]
        assert len(set(machines)) == 6
        assert len(pooled_machines & set(machines)) == 4
        assert len(world.agents.claims) == 4
    finally:
        await one.service.close()
        await two.service.close()


async def test_the_pool_refills_only_under_max_machines(world: World, tmp_path: Path) -> None:
    running = pooled_service(world, tmp_path, size=3, max_machines=4)
    try:
        assert len(await running.pool.refill(machines=2)) == 2  # 2 previews' machines + 2 pooled = 4
        assert await running.pool.refill(machines=2) == []
    finally:
        await running.service.close()


async def test_the_reconciler_keeps_pooled_machines_and_forgets_those_that_died(pooled: Pooled) -> None:
    world = pooled.world
    first, second = await pooled.filled()
    assert await maintenance_pass(pooled.service) == []  # pooled machines are not orphans
    await world.provider.set_state(second, MachineState.STOPPED, exit_reason="crashed")
    done = await maintenance_pass(pooled.service)
    assert done == [f"removed pooled machine {second}: it no longer runs"]
    assert [e.machine_id for e in await world.store.list_pooled()] == [first]
    # A machine of the pool's that lost its row (a replica killed mid-claim) is an orphan.
    await world.store.remove_pooled((await world.store.list_pooled())[0].key)
    assert await maintenance_pass(pooled.service) == [f"destroyed orphan machine {first}"]


async def test_the_template_is_for_the_agents_of_machines_being_pooled_only(pooled: Pooled) -> None:
    await pooled.filled()
    key = (await pooled.world.store.list_pooled())[0].key
    token = pooled.issuer.mint_agent(preview_id=f"pool-{key}", project_id=TEMPLATE_PROJECT, ttl_seconds=60)
    assert pooled.pool.template is not None
    assert await pooled.pool.template_for(pooled.issuer.verify(token)) == pooled.pool.template.snapshot
    stranger = pooled.issuer.mint_agent(preview_id="pool-0000", project_id=TEMPLATE_PROJECT, ttl_seconds=60)
    with pytest.raises(Forbidden):
        await pooled.pool.template_for(pooled.issuer.verify(stranger))
    with pytest.raises(Forbidden):
        await pooled.pool.template_for(ALICE)
    # Once its machine is claimed, the pool token opens nothing.
    keys = {e.key for e in await pooled.world.store.list_pooled()}
    preview, _ = await pooled.service.create(ALICE, "alice-one")
    await pooled.service.settled(preview.id, timeout=5)
    (claimed,) = keys - {e.key for e in await pooled.world.store.list_pooled()}
    used = pooled.issuer.mint_agent(preview_id=f"pool-{claimed}", project_id=TEMPLATE_PROJECT, ttl_seconds=60)
    with pytest.raises(Forbidden):
        await pooled.pool.template_for(pooled.issuer.verify(used))


async def test_a_template_directory_without_a_project_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"WARM_POOL_TEMPLATE .* is not a project directory"):
        load_template(tmp_path, max_bytes=1 << 20)
