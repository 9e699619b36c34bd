"""What the service counts for operators: where machine time goes, and why previews end."""

from __future__ import annotations

import pytest

from tests.service.world import ALICE, World
from velocity.domain import PreviewState
from velocity.loops import maintenance_pass
from velocity.metrics import REGISTRY
from velocity.policy import end_reason


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_machine_time_is_split_into_active_and_idle(world: World) -> None:
    """A ready preview, counted twice within its first minute of activity, then left alone for four:
    the census counts 50 s of it active and 240 s idle, the share an operator pays for nothing.
    Each stretch is classed by the activity the census finds at its end."""
    preview, _ = await world.service.create(ALICE, "alice-one")
    assert (await world.service.settled(preview.id, timeout=5)).state == PreviewState.READY
    await world.service.census()
    active = sample("velocity_machine_seconds_total", state="running_active")
    idle = sample("velocity_machine_seconds_total", state="running_idle")
    await world.clock.advance(25)
    await world.service.census()
    await world.clock.advance(25)
    await world.service.census()
    assert sample("velocity_machine_seconds_total", state="running_active") == pytest.approx(active + 50)
    await world.clock.advance(240)
    await world.service.census()
    assert sample("velocity_machine_seconds_total", state="running_idle") == pytest.approx(idle + 240)


async def test_the_reaper_s_actions_are_counted_by_reason(world: World) -> None:
    preview, _ = await world.service.create(ALICE, "alice-one")
    await world.service.settled(preview.id, timeout=5)
    suspended = sample("velocity_maintenance_actions_total", action="suspend", reason="idle")
    lifetime = sample("velocity_maintenance_actions_total", action="stop", reason="lifetime")
    ended = sample("velocity_preview_ends_total", state="stopped", reason="lifetime")
    await world.clock.advance(16 * 60)
    await maintenance_pass(world.service)
    assert sample("velocity_maintenance_actions_total", action="suspend", reason="idle") == suspended + 1
    await world.clock.advance(60 * 60)
    await maintenance_pass(world.service)
    assert sample("velocity_maintenance_actions_total", action="stop", reason="lifetime") == lifetime + 1
    assert sample("velocity_preview_ends_total", state="stopped", reason="lifetime") == ended + 1


async def test_suspended_machine_time_is_counted_apart(world: World) -> None:
    preview, _ = await world.service.create(ALICE, "alice-one")
    await world.service.settled(preview.id, timeout=5)
    await world.clock.advance(16 * 60)
    await maintenance_pass(world.service)
    await world.service.census()
    before = sample("velocity_machine_seconds_total", state="suspended")
    await world.clock.advance(120)
    await world.service.census()
    assert sample("velocity_machine_seconds_total", state="suspended") == pytest.approx(before + 120)


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("deleted by its owner", "deleted"),
        ("reached its maximum lifetime of 60 min", "lifetime"),
        ("idle for 15 min (PREVIEW_IDLE_TIMEOUT_MINUTES)", "idle"),
        ("not serving within 180 s (CONTAINER_TIMEOUT_SECONDS)", "failed_boot"),
        ("agent reported failure: npm exited with status 1", "failed_boot"),
        ("could not create a machine: Fly API create answered 422", "create_failed"),
        ("its machine is gone", "machine_gone"),
        ("the orchestrator is shutting down", "shutdown"),
        ("something new", "other"),
    ],
)
def test_each_way_a_preview_ends_has_one_kind(reason: str, kind: str) -> None:
    assert end_reason(reason) == kind
