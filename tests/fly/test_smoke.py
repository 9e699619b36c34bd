"""The smoke test through the Fly provider: it passes on the emulator and fails clearly when faulted."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.fly.support import InstantClock, emulator_client, make_settings
from velocity.emulator import Faults, FlyEmulator
from velocity.fly.machine_config import MachinePlan, default_template
from velocity.fly.smoke import SmokeTest, smoke_spec
from velocity.providers.fly import FlyProvider

SETTINGS = make_settings(preview_container_image="ghcr.io/velocity/preview-container:1.0.0")


@pytest.fixture
async def provider(emulator: FlyEmulator, clock: InstantClock) -> AsyncIterator[FlyProvider]:
    plan = MachinePlan.from_settings(SETTINGS, default_template(SETTINGS))
    provider = FlyProvider(emulator_client(emulator, clock), plan)
    yield provider
    await provider.aclose()


async def run(provider: FlyProvider, clock: InstantClock) -> SmokeTest:
    smoke = SmokeTest(provider, provider.client, timeout=10, clock=clock)
    await smoke.run(smoke_spec(SETTINGS))
    return smoke


async def test_the_smoke_test_passes_every_step_and_leaves_nothing(
    emulator: FlyEmulator, provider: FlyProvider, clock: InstantClock
) -> None:
    """create, started, /health passing, destroyed, gone; no machine left."""
    smoke = await run(provider, clock)
    assert [(s.name, s.ok) for s in smoke.steps] == [
        ("create machine", True),
        ("wait until started", True),
        ("/health answers", True),
        ("destroy machine", True),
        ("machine is gone", True),
    ]
    assert smoke.passed
    assert await provider.client.list_machines() == []


async def test_a_machine_that_will_not_boot_fails_the_smoke_test_and_is_destroyed(
    emulator: FlyEmulator, provider: FlyProvider, clock: InstantClock
) -> None:
    """The failing step says why; the machine is cleaned up anyway."""
    emulator.faults = Faults(failing_images=frozenset({SETTINGS.preview_container_image}))
    smoke = await run(provider, clock)
    assert not smoke.passed
    [failure] = [s for s in smoke.steps if not s.ok]
    assert failure.name == "wait until started"
    assert "failed instead of started" in failure.detail
    assert [s.name for s in smoke.steps][-2:] == ["destroy machine", "machine is gone"]


async def test_unhealthy_checks_fail_the_smoke_test(
    clock: InstantClock, provider: FlyProvider, emulator: FlyEmulator
) -> None:
    """Fly's checks never pass: the /health step fails after the timeout, on the clock."""

    async def unhealthy(endpoint: object, path: str) -> bool:
        return False

    emulator.fleet.health = unhealthy
    smoke = await run(provider, clock)
    [failure] = [s for s in smoke.steps if not s.ok]
    assert failure.name == "/health answers"
    assert "critical" in failure.detail


async def test_no_capacity_anywhere_fails_at_create(
    emulator: FlyEmulator, provider: FlyProvider, clock: InstantClock
) -> None:
    """Nothing was made, so nothing is destroyed."""
    emulator.faults = Faults(full_regions=frozenset({"ord"}))
    smoke = await run(provider, clock)
    assert [(s.name, s.ok) for s in smoke.steps] == [("create machine", False)]
    assert "FLY_REGIONS" in smoke.steps[0].detail
