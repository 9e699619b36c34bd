"""The reaper and the reconciler: level-based passes over previews and machines, on a fake clock."""

from __future__ import annotations

from tests.service.world import ALICE, World
from velocity.domain import MachineSpec, MachineState, PreviewState
from velocity.loops import maintenance_pass
from velocity.providers.base import META_OWNER, META_PREVIEW_ID, OWNER_VALUE


async def ready_preview(world: World, project: str = "alice-one") -> str:
    preview, _ = await world.service.create(ALICE, project)
    assert (await world.service.settled(preview.id, timeout=5)).state == PreviewState.READY
    return preview.id


async def test_a_preview_past_its_lifetime_is_stopped_whatever_its_activity(world: World) -> None:
    """MAX_CONTAINER_LIFETIME_MINUTES is a hard limit: keepalives do not extend it."""
    preview_id = await ready_preview(world)
    for _ in range(6):
        await world.clock.advance(10 * 60)
        await world.service.keepalive(ALICE, preview_id)
    done = await maintenance_pass(world.service)
    assert any("maximum lifetime of 60 min" in line for line in done)
    preview = await world.store.get_preview(preview_id)
    assert preview.state == PreviewState.STOPPED
    assert (await world.provider.get(preview.machine_id or "")).state == MachineState.DESTROYED


async def test_an_idle_preview_is_stopped_and_a_keepalive_postpones_it(world: World) -> None:
    """No activity for PREVIEW_IDLE_TIMEOUT_MINUTES stops a preview; a keepalive restarts the count."""
    preview_id = await ready_preview(world)
    await world.clock.advance(14 * 60)
    await world.service.keepalive(ALICE, preview_id)
    await world.clock.advance(14 * 60)
    assert await maintenance_pass(world.service) == []
    await world.clock.advance(60)
    done = await maintenance_pass(world.service)
    assert done == [f"stop {preview_id}: idle for 15 min (PREVIEW_IDLE_TIMEOUT_MINUTES)"]
    assert (await world.store.get_preview(preview_id)).state == PreviewState.STOPPED


async def test_router_activity_counts_as_activity(world: World) -> None:
    """Requests and websocket frames through the router keep a preview from going idle."""
    preview_id = await ready_preview(world)
    await world.clock.advance(14 * 60)
    world.service.record_activity(preview_id)
    await world.clock.advance(2 * 60)
    assert await world.service.reap() == []


async def test_a_machine_of_ours_with_no_live_preview_is_destroyed(world: World) -> None:
    """An orphan (a crash between create and the row update, a deleted row) is money burning."""
    orphan = await world.provider.create(
        MachineSpec(
            image="x",
            memory_mb=512,
            cpus=1,
            cpu_kind="shared",
            internal_port=8080,
            env={},
            metadata={META_OWNER: OWNER_VALUE, META_PREVIEW_ID: "gonegonegone"},
        )
    )
    someone_elses = await world.provider.create(
        MachineSpec(
            image="x", memory_mb=512, cpus=1, cpu_kind="shared", internal_port=8080, env={}, metadata={}
        )
    )
    done = await maintenance_pass(world.service)
    assert done == [f"destroyed orphan machine {orphan.id}"]
    assert (await world.provider.get(orphan.id)).state == MachineState.DESTROYED
    assert (await world.provider.get(someone_elses.id)).state == MachineState.STARTED


async def test_a_live_preview_whose_machine_vanished_fails(world: World) -> None:
    """Someone destroyed the machine behind our back: the preview fails, saying so."""
    preview_id = await ready_preview(world)
    machine_id = (await world.store.get_preview(preview_id)).machine_id or ""
    await world.service.close()  # no watcher: only the reconciler can notice
    world.provider.vanish(machine_id)
    done = await maintenance_pass(world.service)
    assert done == [f"failed {preview_id}: its machine is gone"]
    assert (await world.store.get_preview(preview_id)).state == PreviewState.FAILED


async def test_a_booting_preview_left_by_a_previous_orchestrator_is_adopted(world: World) -> None:
    """After a restart the reconciler resumes waiting for a booting preview's machine."""
    world.agents.state = "installing"
    preview, _ = await world.service.create(ALICE, "alice-one")
    await world.agents.asked.wait()
    await world.service.close()  # the orchestrator "restarts": its tasks are gone
    world.agents.state = "ready"
    done = await maintenance_pass(world.service)
    assert done == [f"adopted {preview.id} (booting)"]
    assert (await world.service.settled(preview.id, timeout=5)).state == PreviewState.READY


async def test_a_stop_cut_short_by_a_crash_is_finished_with_the_machine_that_came_late(world: World) -> None:
    """A process died between ``stopping`` and ``stopped``, its create's machine arriving after the
    stop began (so the row names none): the next pass destroys that machine and stops the preview."""
    preview_id = await ready_preview(world)
    machine_id = (await world.store.get_preview(preview_id)).machine_id
    await world.store.update_preview(preview_id, state=PreviewState.STOPPING, machine_id=None)
    done = await maintenance_pass(world.service)
    assert f"finished stopping {preview_id}" in done
    assert (await world.store.get_preview(preview_id)).state == PreviewState.STOPPED
    assert (await world.provider.get(machine_id or "")).state == MachineState.DESTROYED
