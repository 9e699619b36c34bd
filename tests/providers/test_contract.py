"""What every machine provider promises the service; ``conftest.BACKENDS`` lists who must keep it."""

from __future__ import annotations

import contextlib
import uuid

import pytest

from tests.providers.conftest import ContractTarget, SpecMaker
from velocity.domain import MachineState, NotFound, Unavailable
from velocity.providers.base import STOPPED_OR_BEYOND, MachineProvider

RUNNING = {MachineState.CREATED, MachineState.STARTING, MachineState.STARTED}


def ours(**extra: str) -> dict[str, str]:
    return {"velocity_owner": "velocity-previews", "velocity_preview_id": uuid.uuid4().hex, **extra}


async def test_a_created_machine_carries_the_metadata_it_was_given(
    provider: MachineProvider, make_spec: SpecMaker
) -> None:
    """The id is known at once, the state is on its way up, every metadata pair is kept."""
    metadata = ours(project_id="p1", user_id="u1")
    machine = await provider.create(make_spec(metadata))
    assert machine.id
    assert machine.state in RUNNING
    assert metadata.items() <= machine.metadata.items()
    await provider.destroy(machine.id)


async def test_get_returns_the_machine_by_its_id(provider: MachineProvider, make_spec: SpecMaker) -> None:
    """Same id, same metadata, a creation time."""
    metadata = ours()
    created = await provider.create(make_spec(metadata))
    found = await provider.get(created.id)
    assert found.id == created.id
    assert metadata.items() <= found.metadata.items()
    assert found.created_at.tzinfo is not None
    await provider.destroy(created.id)


async def test_list_returns_only_machines_matching_every_metadata_pair(
    provider: MachineProvider, make_spec: SpecMaker
) -> None:
    """Filtering by metadata is how the reconciler finds ours."""
    run = uuid.uuid4().hex
    a = await provider.create(make_spec(ours(run=run, project_id="a")))
    b = await provider.create(make_spec(ours(run=run, project_id="b")))
    assert [m.id for m in await provider.list(metadata={"run": run, "project_id": "a"})] == [a.id]
    assert {m.id for m in await provider.list(metadata={"run": run})} == {a.id, b.id}
    assert await provider.list(metadata={"run": run, "project_id": "c"}) == []
    for machine in (a, b):
        await provider.destroy(machine.id)


async def test_a_machine_can_be_waited_for_until_started(target: ContractTarget) -> None:
    """``wait`` returns the machine in the state asked for."""
    machine = await target.provider.create(target.spec(ours()))
    started = await target.provider.wait(machine.id, state=MachineState.STARTED, timeout=target.boot_timeout)
    assert started.state is MachineState.STARTED
    assert started.id == machine.id
    await target.provider.destroy(machine.id)


async def test_a_stopped_machine_no_longer_runs(target: ContractTarget) -> None:
    """After ``stop``, waiting for stopped ends (stopped, or destroyed where machines destroy themselves)."""
    provider = target.provider
    machine = await provider.create(target.spec(ours()))
    await provider.wait(machine.id, state=MachineState.STARTED, timeout=target.boot_timeout)
    await provider.stop(machine.id, timeout=5)
    stopped = await provider.wait(machine.id, state=MachineState.STOPPED, timeout=target.boot_timeout)
    assert stopped.state in STOPPED_OR_BEYOND
    await provider.destroy(machine.id)


async def test_destroy_is_idempotent_and_the_machine_is_gone_after(target: ContractTarget) -> None:
    """Destroying twice is fine; then the machine is not listed and reads as gone or not found."""
    provider = target.provider
    metadata = ours()
    machine = await provider.create(target.spec(metadata))
    await provider.wait(machine.id, state=MachineState.STARTED, timeout=target.boot_timeout)
    await provider.destroy(machine.id)
    await provider.destroy(machine.id)
    await provider.wait(machine.id, state=MachineState.DESTROYED, timeout=target.boot_timeout)
    assert await provider.list(metadata=metadata) == []
    with contextlib.suppress(NotFound):
        assert (await provider.get(machine.id)).state.is_gone


async def test_an_unknown_machine_is_not_found(provider: MachineProvider) -> None:
    """get and wait raise ``NotFound``; destroying it is not an error."""
    with pytest.raises(NotFound):
        await provider.get("no-such-machine")
    with pytest.raises(NotFound):
        await provider.wait("no-such-machine", state=MachineState.STARTED, timeout=1)
    await provider.destroy("no-such-machine")


async def test_a_wait_that_runs_out_is_unavailable(target: ContractTarget) -> None:
    """A state not reached in time is a transient ``Unavailable``, not a hang."""
    machine = await target.provider.create(target.spec(ours()))
    await target.provider.wait(machine.id, state=MachineState.STARTED, timeout=target.boot_timeout)
    with pytest.raises(Unavailable):
        await target.provider.wait(machine.id, state=MachineState.STOPPED, timeout=1)
    await target.provider.destroy(machine.id)


async def test_a_started_machine_has_an_agent_endpoint(target: ContractTarget) -> None:
    """A URL to dial, or a unix socket with a base URL for the Host header."""
    machine = await target.provider.create(target.spec(ours()))
    started = await target.provider.wait(machine.id, state=MachineState.STARTED, timeout=target.boot_timeout)
    endpoint = target.provider.endpoint(started)
    assert endpoint.base_url.startswith("http")
    assert endpoint.uds is None or endpoint.uds.endswith(".sock")
    await target.provider.destroy(machine.id)


async def test_logs_are_lines_of_text(target: ContractTarget) -> None:
    """Whatever the backend keeps, as a list of strings (possibly empty)."""
    machine = await target.provider.create(target.spec(ours()))
    await target.provider.wait(machine.id, state=MachineState.STARTED, timeout=target.boot_timeout)
    lines = await target.provider.logs(machine.id, tail=10)
    assert all(isinstance(line, str) for line in lines)
    assert len(lines) <= 10
    await target.provider.destroy(machine.id)
