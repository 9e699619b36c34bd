"""The reaper and the reconciler: level-based passes over previews and machines, on a fake clock."""

from __future__ import annotations

from dataclasses import replace

from tests.service.world import ALICE, World
from velocity.domain import MachineSpec, MachineState, PreviewState
from velocity.loops import maintenance_pass
from velocity.metrics import REGISTRY
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
    """No activity for PREVIEW_IDLE_TIMEOUT_MINUTES stops a preview (PREVIEW_IDLE_ACTION=stop; the
    default suspends it, tests/service/test_suspend.py); a keepalive restarts the count."""
    world.service.limits = replace(world.service.limits, idle_action="stop")
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


async def test_a_second_machine_of_a_live_preview_is_destroyed_and_its_own_kept(world: World) -> None:
    """A machine made for a preview by an earlier attempt (a create whose answer was lost, a launch
    killed before it wrote the id) is an orphan once the preview has its machine; while a preview has
    none yet, a machine of its is the one being made and is left alone."""
    preview_id = await ready_preview(world)
    preview = await world.store.get_preview(preview_id)
    spec = MachineSpec(
        image="x", memory_mb=512, cpus=1, cpu_kind="shared", internal_port=8080, env={},
        metadata={META_OWNER: OWNER_VALUE, META_PREVIEW_ID: preview_id},
    )  # fmt: skip
    earlier = await world.provider.create(spec)
    done = await maintenance_pass(world.service)
    assert done == [f"destroyed orphan machine {earlier.id}"]
    assert (await world.provider.get(earlier.id)).state == MachineState.DESTROYED
    assert preview.machine_id is not None
    assert (await world.provider.get(preview.machine_id)).state == MachineState.STARTED


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


async def test_a_machine_stuck_in_a_transient_state_for_an_hour_is_destroyed_and_reported(
    world: World,
) -> None:
    """Fly left an orphan half-destroyed: the reconciler does not destroy a destroying machine again,
    until it has been destroying for STUCK_MACHINE_MINUTES (the seed guide's hour): then it forces it."""
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
    await world.provider.set_state(orphan.id, MachineState.DESTROYING)
    await world.clock.advance(59 * 60)
    assert await maintenance_pass(world.service) == []
    await world.clock.advance(60)
    counted = {"action": "destroy", "reason": "stuck"}
    before = REGISTRY.get_sample_value("velocity_maintenance_actions_total", counted) or 0.0
    done = await maintenance_pass(world.service)
    assert done == [f"destroyed stuck machine {orphan.id} (destroying for 60 min)"]
    assert (await world.provider.get(orphan.id)).state == MachineState.DESTROYED
    assert REGISTRY.get_sample_value("velocity_maintenance_actions_total", counted) == before + 1


async def test_a_preview_whose_machine_is_stuck_fails_saying_so(world: World) -> None:
    """A ready preview's machine went into a restart that never ends: after the hour the preview
    fails with the reason and the machine is destroyed; nothing else is touched."""
    stuck_id = await ready_preview(world, "alice-one")
    fine_id = await ready_preview(world, "alice-two")
    await world.service.close()  # no watchers: only the reconciler looks
    machine_id = (await world.store.get_preview(stuck_id)).machine_id or ""
    await world.provider.set_state(machine_id, MachineState.STARTING)
    for _ in range(4):
        await world.clock.advance(15 * 60)
        world.service.record_activity(stuck_id)
        world.service.record_activity(fine_id)
    done = await world.service.reconcile()
    assert f"destroyed stuck machine {machine_id} (starting for 60 min)" in done
    stuck = await world.store.get_preview(stuck_id)
    assert stuck.state == PreviewState.FAILED
    assert (
        stuck.failure_reason == f"its machine {machine_id} was stuck (starting for 60 min) and was destroyed"
    )
    assert (await world.provider.get(machine_id)).state == MachineState.DESTROYED
    assert (await world.store.get_preview(fine_id)).state == PreviewState.READY


async def test_a_machine_made_after_the_machine_list_was_read_is_not_taken_for_gone(world: World) -> None:
    """The pass lists machines before it reads the rows (so a machine made meanwhile is no orphan);
    a preview whose create finished in between is missing from that list, and is asked about, not failed."""
    preview_id = await ready_preview(world)
    listed_before_the_create: list[object] = []

    async def stale_list(**_: object) -> list[object]:
        return listed_before_the_create

    world.provider.list = stale_list  # type: ignore[method-assign,assignment]
    assert await world.service.reconcile() == []
    assert (await world.store.get_preview(preview_id)).state == PreviewState.READY


async def test_a_launch_that_finished_while_the_pass_ran_is_not_taken_for_gone(world: World) -> None:
    """The pass read a row while its machine was being created (no machine yet, none listed), and
    the launch finished before the pass reached it: the pass reads the row again, finds the machine."""
    preview_id = await ready_preview(world)
    while_provisioning = replace(
        await world.store.get_preview(preview_id), state=PreviewState.PROVISIONING, machine_id=None
    )

    async def rows_read_then(**_: object) -> list[object]:
        return [while_provisioning]

    async def machines_listed_then(**_: object) -> list[object]:
        return []

    real_rows = world.store.list_previews
    world.provider.list = machines_listed_then  # type: ignore[method-assign,assignment]
    world.store.list_previews = rows_read_then  # type: ignore[method-assign,assignment]
    try:
        assert await world.service.reconcile() == []
    finally:
        world.store.list_previews = real_rows  # type: ignore[method-assign]
    assert (await world.store.get_preview(preview_id)).state == PreviewState.READY
