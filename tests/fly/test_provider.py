"""The Fly provider on the emulator: regions, states, endpoints and the API calls a lifecycle costs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from tests.fly.support import InstantClock, emulator_client, make_settings
from velocity.domain import CapacityError, MachineSpec, MachineState, ProviderError
from velocity.emulator import Faults, FlyEmulator
from velocity.fly.machine_config import MachinePlan, default_template
from velocity.fly.types import MachineEvent
from velocity.providers.fly import FlyProvider, machine_from_json

SPEC = MachineSpec(
    image="ghcr.io/velocity/preview-container:1.0.0",
    memory_mb=512,
    cpus=1,
    cpu_kind="shared",
    internal_port=8080,
    env={"PROJECT_ID": "p1"},
    metadata={"project_id": "p1", "velocity_preview_id": "pv1"},
)


@pytest.fixture
async def provider(emulator: FlyEmulator, clock: InstantClock) -> AsyncIterator[FlyProvider]:
    settings = make_settings(fly_regions=["ord", "iad", "ams"])
    provider = FlyProvider(
        emulator_client(emulator, clock), MachinePlan.from_settings(settings, default_template(settings))
    )
    yield provider
    await provider.aclose()


async def test_a_full_region_falls_back_to_the_next_configured_one(
    emulator: FlyEmulator, provider: FlyProvider
) -> None:
    """ord is out of capacity: the machine lands in iad."""
    emulator.faults = Faults(full_regions=frozenset({"ord"}))
    machine = await provider.create(SPEC)
    assert machine.region == "iad"


async def test_every_region_full_is_a_capacity_error_naming_them(
    emulator: FlyEmulator, provider: FlyProvider
) -> None:
    """The error lists the regions tried and says what to do."""
    emulator.faults = Faults(full_regions=frozenset({"ord", "iad", "ams"}))
    with pytest.raises(CapacityError, match="ord, iad, ams"):
        await provider.create(SPEC)


async def test_the_spec_region_is_tried_first(provider: FlyProvider) -> None:
    """A spec naming a region gets it."""
    machine = await provider.create(replace(SPEC, region="ams"))
    assert machine.region == "ams"


async def test_a_machine_that_fails_to_boot_fails_the_wait_with_its_reason(
    emulator: FlyEmulator, provider: FlyProvider
) -> None:
    """Waiting for started ends at failed, with Fly's exit reason in the error."""
    emulator.faults = Faults(failing_images=frozenset({SPEC.image}))
    machine = await provider.create(SPEC)
    with pytest.raises(ProviderError, match="failed"):
        await provider.wait(machine.id, state=MachineState.STARTED, timeout=5)


async def test_a_lifecycle_costs_one_create_one_wait_and_one_destroy(
    emulator: FlyEmulator, provider: FlyProvider
) -> None:
    """The wait answer and what create returned make the machine; no extra get."""
    machine = await provider.create(SPEC)
    started = await provider.wait(machine.id, state=MachineState.STARTED, timeout=5)
    assert started.metadata["velocity_preview_id"] == "pv1"
    await provider.destroy(machine.id)
    assert dict(emulator.stats.calls) == {"create": 1, "wait": 1, "destroy": 1}


async def test_the_agent_is_reached_at_the_machine_private_network_name(provider: FlyProvider) -> None:
    """``http://<id>.vm.<app>.internal:<port>``: stable across restarts, no proxy in the way."""
    machine = await provider.create(SPEC)
    endpoint = provider.endpoint(machine)
    assert endpoint.base_url == f"http://{machine.id}.vm.velocity-preview-containers.internal:8080"
    assert endpoint.uds is None


async def test_logs_are_not_served_by_the_machines_api(provider: FlyProvider) -> None:
    """Fly ships logs elsewhere (``fly logs``): the provider has none to give."""
    assert await provider.logs("anything") == []


@pytest.mark.parametrize(
    ("fly_state", "ours"),
    [
        ("creating", MachineState.CREATED),
        ("replacing", MachineState.STARTING),
        ("launch_failed", MachineState.FAILED),
    ],
)
def test_fly_transient_states_fold_onto_ours(fly_state: str, ours: MachineState) -> None:
    """Fly's extra states map onto the words the rest of the project knows."""
    machine = machine_from_json({"id": "m", "state": fly_state, "created_at": "2026-01-01T00:00:00Z"})
    assert machine.state is ours


def test_an_unknown_state_is_an_error_not_a_guess() -> None:
    """A state Fly invents later is reported, not mistaken for another."""
    with pytest.raises(ProviderError, match="unknown state"):
        machine_from_json({"id": "m", "state": "hibernating"})


def test_the_exit_reason_comes_from_the_latest_exit_event() -> None:
    """Out of memory, a requested stop, or the exit code."""
    event: MachineEvent = {"type": "exit", "request": {"exit_event": {"exit_code": 137, "oom_killed": True}}}
    machine = machine_from_json({"id": "m", "state": "stopped", "events": [event]})
    assert machine.exit_reason == "out of memory; set CONTAINER_MEMORY_MB higher"
    config = {"guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 512}}
    sized = machine_from_json({"id": "m", "state": "stopped", "events": [event], "config": config})
    assert (
        sized.exit_reason == "out of memory; the machine has 512 MB: set CONTAINER_MEMORY_MB to 1024 or more"
    )


async def test_the_provider_is_built_from_settings() -> None:
    """Token, app, base URL and the template: what runtime.make_provider calls."""
    settings = make_settings(fly_api_base_url="http://127.0.0.1:4280")
    provider = FlyProvider.from_settings(settings)
    assert provider.client.app == settings.fly_app_name
    assert provider.plan.regions == ("ord",)
    await provider.aclose()
