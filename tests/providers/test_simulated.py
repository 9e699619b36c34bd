"""What the simulated provider does beyond the contract: latencies, failing boots, exits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from tests.fly.support import InstantClock
from velocity.domain import MachineSpec, MachineState, ProviderError
from velocity.providers.simulated import SimulatedLatencies, SimulatedProvider

SPEC = MachineSpec(
    image="good", memory_mb=256, cpus=1, cpu_kind="shared", internal_port=8080, env={}, metadata={"k": "v"}
)


@pytest.fixture
async def provider() -> AsyncIterator[SimulatedProvider]:
    provider = SimulatedProvider(failing_images=frozenset({"bad"}))
    yield provider
    await provider.aclose()


async def test_a_failing_image_fails_the_wait_for_started(provider: SimulatedProvider) -> None:
    """The boot ends in failed, with the reason in the error."""
    machine = await provider.create(replace(SPEC, image="bad"))
    with pytest.raises(ProviderError, match="could not be pulled"):
        await provider.wait(machine.id, state=MachineState.STARTED, timeout=1)


async def test_an_exit_stops_the_machine_with_its_reason(provider: SimulatedProvider) -> None:
    """As when the agent crashes: stopped, with the exit reason, and the logs say so."""
    machine = await provider.create(SPEC)
    await provider.wait(machine.id, state=MachineState.STARTED, timeout=1)
    await provider.exit(machine.id, reason="exit code 137")
    stopped = await provider.wait(machine.id, state=MachineState.STOPPED, timeout=1)
    assert stopped.exit_reason == "exit code 137"
    assert (await provider.logs(machine.id))[-1].endswith("stopped: exit code 137")


async def test_latencies_are_spent_on_the_injected_clock() -> None:
    """Create, boot, stop and destroy each take their configured time."""
    clock = InstantClock()
    provider = SimulatedProvider(SimulatedLatencies(create=1.0, boot=2.0, stop=3.0, destroy=4.0), clock=clock)
    machine = await provider.create(SPEC)
    await provider.wait(machine.id, state=MachineState.STARTED, timeout=1)
    await provider.stop(machine.id)
    await provider.destroy(machine.id)
    assert clock.slept == [1.0, 2.0, 3.0, 4.0]
    await provider.aclose()
