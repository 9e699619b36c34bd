"""The preview lifecycle, on an in-memory provider and a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from tests.service.world import ALICE, BOB, World
from velocity.domain import (
    MachineState,
    NotFound,
    PreviewGone,
    PreviewState,
    QuotaExceeded,
    TooManyRequests,
    Unavailable,
)
from velocity.providers.base import META_OWNER, META_PREVIEW_ID, META_PROJECT_ID, META_USER_ID


async def test_a_new_preview_becomes_ready_once_its_agent_serves(world: World) -> None:
    """A create writes the row, makes a machine, and the preview turns ready when the agent says so."""
    preview, created = await world.service.create(ALICE, "alice-one")
    assert created and preview.state == PreviewState.PROVISIONING
    ready = await world.service.settled(preview.id, timeout=5)
    assert ready.state == PreviewState.READY
    assert ready.machine_id is not None and ready.ready_at is not None
    states = [e.state for _, e in await world.store.events(preview.id)]
    assert states == [PreviewState.PROVISIONING, PreviewState.BOOTING, PreviewState.READY]


async def test_a_second_create_for_the_same_project_returns_the_live_preview(world: World) -> None:
    """One live preview per user and project: creating again returns it and makes no machine."""
    first, _ = await world.service.create(ALICE, "alice-one")
    await world.service.settled(first.id, timeout=5)
    again, created = await world.service.create(ALICE, "alice-one")
    assert not created and again.id == first.id
    assert len(await world.provider.list()) == 1


async def test_concurrent_creates_by_one_user_never_exceed_the_quota(world: World) -> None:
    """Four projects created at once with MAX_CONTAINERS_PER_USER=3: three previews, one 429."""
    results = await asyncio.gather(
        *(world.service.create(ALICE, f"alice-{n}") for n in ("one", "two", "three", "four")),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, QuotaExceeded)]
    assert len(refused) == 1 and refused[0].status_code == 429
    assert len(await world.service.list_previews(ALICE)) == 3
    for result in results:
        if not isinstance(result, BaseException):
            await world.service.settled(result[0].id, timeout=5)
    assert len(await world.provider.list()) == 3


async def test_a_stopped_preview_frees_its_place_in_the_quota(world: World) -> None:
    """Deleting a preview lets the user create another one."""
    made = [await world.service.create(ALICE, f"alice-{n}") for n in ("one", "two", "three")]
    with pytest.raises(QuotaExceeded):
        await world.service.create(ALICE, "alice-four")
    await world.service.delete(ALICE, made[0][0].id)
    _, created = await world.service.create(ALICE, "alice-four")
    assert created


async def test_a_user_cannot_see_or_touch_another_users_preview(world: World) -> None:
    """Someone else's preview is answered as not found, for every use case."""
    preview, _ = await world.service.create(ALICE, "alice-one")
    for attempt in (
        world.service.get(BOB, preview.id),
        world.service.delete(BOB, preview.id),
        world.service.keepalive(BOB, preview.id),
        world.service.logs(BOB, preview.id, tail=10),
    ):
        with pytest.raises(NotFound):
            await attempt
    assert await world.service.list_previews(BOB) == []
    assert (await world.service.settled(preview.id, timeout=5)).state == PreviewState.READY


@pytest.mark.parametrize("project_id", ["nope", "bob-one"])
async def test_a_preview_of_a_project_the_user_does_not_own_is_not_created(
    world: World, project_id: str
) -> None:
    """Unknown projects and other users' projects are not found; no row, no machine."""
    with pytest.raises(NotFound):
        await world.service.create(ALICE, project_id)
    assert await world.service.list_previews(ALICE) == []
    assert world.provider.calls == []


async def test_a_machine_that_never_serves_is_destroyed_and_the_preview_fails(world: World) -> None:
    """Past CONTAINER_TIMEOUT_SECONDS the machine goes and the preview fails with the reason and logs."""
    world.agents.state = None
    preview, _ = await world.service.create(ALICE, "alice-one")
    await world.agents.asked.wait()
    await world.clock.advance(world.settings.container_timeout_seconds + 1)
    failed = await world.service.settled(preview.id, timeout=5)
    assert failed.state == PreviewState.FAILED
    assert "CONTAINER_TIMEOUT_SECONDS" in (failed.failure_reason or "")
    assert failed.failure_logs == ("vite ready", "GET /")
    machine = await world.provider.get(failed.machine_id or "")
    assert machine.state == MachineState.DESTROYED


async def test_an_agent_that_reports_failure_fails_the_preview(world: World) -> None:
    """The agent's own failure (npm install broke, say) ends the preview with its detail."""
    world.agents.state, world.agents.detail = "failed", "npm install exited with 1"
    preview, _ = await world.service.create(ALICE, "alice-one")
    failed = await world.service.settled(preview.id, timeout=5)
    assert failed.state == PreviewState.FAILED
    assert "npm install exited with 1" in (failed.failure_reason or "")


async def test_a_machine_create_error_fails_the_preview_and_frees_the_quota(world: World) -> None:
    """A provider error fails the preview, leaves no machine, and does not count against the user."""
    world.provider.fail_next_create(Unavailable("backend down"))
    preview, _ = await world.service.create(ALICE, "alice-one")
    failed = await world.service.settled(preview.id, timeout=5)
    assert failed.state == PreviewState.FAILED and "backend down" in (failed.failure_reason or "")
    assert await world.provider.list() == []
    _, created = await world.service.create(ALICE, "alice-one")
    assert created


async def test_deleting_a_preview_destroys_its_machine(world: World) -> None:
    """Delete: stopping, machine destroyed, stopped; its URL no longer routes."""
    preview, _ = await world.service.create(ALICE, "alice-one")
    ready = await world.service.settled(preview.id, timeout=5)
    stopped = await world.service.delete(ALICE, preview.id)
    assert stopped.state == PreviewState.STOPPED
    assert (await world.provider.get(ready.machine_id or "")).state == MachineState.DESTROYED
    with pytest.raises(PreviewGone):
        await world.service.route(preview.id, wait=0)


async def test_a_machine_that_stops_on_its_own_fails_its_preview_with_the_reason(world: World) -> None:
    """Out of memory (or any exit) after ready: the preview fails and says why."""
    preview, _ = await world.service.create(ALICE, "alice-one")
    ready = await world.service.settled(preview.id, timeout=5)
    await world.provider.set_state(ready.machine_id or "", MachineState.STOPPED, exit_reason="out of memory")
    current = await world.service.ended(preview.id, timeout=5)
    assert current.state == PreviewState.FAILED
    assert "out of memory" in (current.failure_reason or "")


async def test_the_machine_spec_names_the_preview_and_carries_no_orchestrator_secret(world: World) -> None:
    """Metadata marks the machine ours; the env has the agent's own token, never FLY_API_TOKEN."""
    preview, _ = await world.service.create(ALICE, "alice-one")
    ready = await world.service.settled(preview.id, timeout=5)
    spec = world.provider.specs[ready.machine_id or ""]
    assert spec.metadata[META_OWNER] == "velocity-previews"
    assert spec.metadata[META_PREVIEW_ID] == preview.id
    assert spec.metadata[META_USER_ID] == "alice"
    assert spec.metadata[META_PROJECT_ID] == "alice-one"
    assert spec.env["PROJECT_ID"] == "alice-one"
    assert spec.env["SNAPSHOT_URL"].endswith("/v1/projects/alice-one/snapshot")
    assert "FLY_API_TOKEN" not in spec.env and "DATABASE_URL" not in spec.env
    assert spec.memory_mb == 512 and spec.cpus == 1 and spec.internal_port == 8080


async def test_routing_waits_for_a_booting_preview(world: World) -> None:
    """A request that arrives while the preview boots is held until it is ready."""
    world.provider.hold_start = True
    world.agents.state = "installing"
    preview, _ = await world.service.create(ALICE, "alice-one")
    route = asyncio.create_task(world.service.route(preview.id, wait=5))
    await world.provider.created.wait()  # the machine is made in the background
    (machine_id,) = world.provider.specs
    assert not route.done()
    await world.provider.set_state(machine_id, MachineState.STARTED)  # the service waited for this
    await world.agents.asked.wait()
    assert not route.done()
    world.agents.state = "ready"
    await world.clock.advance(1)
    endpoint = await route
    assert endpoint.base_url.startswith("http://")


async def test_a_burst_of_creates_past_the_rate_gets_429_with_when_to_retry(world: World) -> None:
    """PREVIEW_CREATE_BURST creates at once, then one per refill: the rest are told when to retry."""
    for _ in range(world.settings.preview_create_burst):
        preview, _ = await world.service.create(ALICE, "alice-one")
        await world.service.delete(ALICE, preview.id)
    with pytest.raises(TooManyRequests) as refused:
        await world.service.create(ALICE, "alice-one")
    assert refused.value.status_code == 429
    assert refused.value.retry_after == pytest.approx(60 / world.settings.preview_create_rate_per_minute)
    _, created = await world.service.create(BOB, "bob-one")
    assert created, "another user's rate is their own"
    await world.clock.advance(refused.value.retry_after or 0)
    _, created = await world.service.create(ALICE, "alice-one")
    assert created


async def test_an_agent_not_answering_yet_is_polled_gently_and_its_machine_rarely(world: World) -> None:
    """While a machine boots its agent is asked again after 20 ms, then twice as long each time up to
    1 s, and the provider about the machine at most every 2 s: over ten seconds a handful of calls,
    not hundreds (Fly's rate limits are per app)."""
    world.agents.state = None
    preview, _ = await world.service.create(ALICE, "alice-one")
    await world.agents.asked.wait()
    for _ in range(100):
        await world.clock.advance(0.1)
    gets = [call for call in world.provider.calls if call[0] == "get"]
    assert world.agents.health_calls <= 20, world.agents.health_calls
    assert len(gets) <= 6, gets
    world.agents.state = "ready"
    for _ in range(20):
        await world.clock.advance(0.1)
    assert (await world.service.settled(preview.id, timeout=5)).state == PreviewState.READY


async def test_a_machine_the_api_does_not_show_yet_is_not_taken_for_gone(world: World) -> None:
    """Right after a create Fly's API may answer 404 for the new machine (flyctl retries it): within
    its first seconds that is not "disappeared"; the preview becomes ready."""
    world.provider.unseen_gets_after_create = 3
    world.agents.state = None
    preview, _ = await world.service.create(ALICE, "alice-one")
    await world.agents.asked.wait()
    for _ in range(60):
        await world.clock.advance(0.1)
    assert (await world.service.get(ALICE, preview.id)).state == PreviewState.BOOTING
    world.agents.state = "ready"
    for _ in range(20):
        await world.clock.advance(0.1)
    assert (await world.service.settled(preview.id, timeout=5)).state == PreviewState.READY


async def test_a_machine_gets_the_egress_allowlist_its_own_proxy_decides_by(world: World) -> None:
    """PREVIEW_EGRESS_ALLOWLIST reaches the machine's environment when set (a Fly machine's proxy
    reads it); unset, the machine's own default applies and nothing is passed."""
    preview, _ = await world.service.create(ALICE, "alice-one")
    ready = await world.service.settled(preview.id, timeout=5)
    assert "PREVIEW_EGRESS_ALLOWLIST" not in world.provider.specs[ready.machine_id or ""].env
    world.settings.preview_egress_allowlist = ["registry.npmjs.org", "api.example.com:8443"]
    preview, _ = await world.service.create(ALICE, "alice-two")
    ready = await world.service.settled(preview.id, timeout=5)
    env = world.provider.specs[ready.machine_id or ""].env
    assert env["PREVIEW_EGRESS_ALLOWLIST"] == "registry.npmjs.org,api.example.com:8443"
