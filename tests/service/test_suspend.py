"""Suspend on idle, resume on request: an idle preview's machine is suspended (it keeps its memory
and costs no CPU), the next request resumes it, and its lifetime still ends it."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from tests.service.test_maintenance import ready_preview
from tests.service.world import ALICE, World
from velocity.domain import MachineState, PreviewState, QuotaExceeded, Unavailable
from velocity.loops import maintenance_pass
from velocity.providers.fake import FakeProvider
from velocity.router import PreviewRouter

IDLE = "idle for 15 min (PREVIEW_IDLE_TIMEOUT_MINUTES)"


async def suspended_preview(world: World) -> str:
    preview_id = await ready_preview(world)
    await world.clock.advance(15 * 60)
    assert await maintenance_pass(world.service) == [f"suspend {preview_id}: {IDLE}"]
    return preview_id


async def test_an_idle_preview_is_suspended_not_stopped(world: World) -> None:
    preview_id = await suspended_preview(world)
    preview = await world.store.get_preview(preview_id)
    assert preview.state == PreviewState.SUSPENDED
    assert (await world.provider.get(preview.machine_id or "")).state == MachineState.SUSPENDED
    events = [event.detail for _, event in await world.store.events(preview_id)]
    assert events[-1] == f"suspended: {IDLE}"
    # Suspended, it is not idle any more: later passes leave it alone.
    await world.clock.advance(15 * 60)
    assert await maintenance_pass(world.service) == []


async def test_the_next_request_resumes_it_once_for_all_who_ask(world: World) -> None:
    preview_id = await suspended_preview(world)
    before = world.agents.health_calls
    endpoints = await asyncio.gather(*(world.service.route(preview_id, wait=5) for _ in range(5)))
    assert len({endpoint.base_url for endpoint in endpoints}) == 1
    preview = await world.store.get_preview(preview_id)
    assert preview.state == PreviewState.READY
    assert preview.last_activity_at == world.clock.now()  # the idle count starts again
    assert [call for call in world.provider.calls if call[0] == "resume"] == [("resume", preview.machine_id)]
    assert world.agents.health_calls > before  # it serves once its agent says so, not before
    events = [event.detail or "" for _, event in await world.store.events(preview_id)]
    assert events[-1].startswith("resumed in ")


async def test_a_keepalive_wakes_a_suspended_preview(world: World) -> None:
    """An editor open on the project says so with keepalives: its edits must reach a running agent."""
    preview_id = await suspended_preview(world)
    await world.service.keepalive(ALICE, preview_id)
    preview = await world.service.wait_for(preview_id, lambda p: p.state != PreviewState.SUSPENDED, timeout=5)
    assert preview.state == PreviewState.READY
    assert (await world.provider.get(preview.machine_id or "")).state == MachineState.STARTED


async def test_a_request_waits_for_an_agent_that_is_not_serving_yet(world: World) -> None:
    """Fly may boot a suspended machine afresh: the preview is ready again only once its agent
    says so; meanwhile a request gets 503 at its deadline and the resume goes on."""
    preview_id = await suspended_preview(world)
    world.agents.state = "booting"
    with pytest.raises(Unavailable, match="still resuming"):
        await world.service.route(preview_id, wait=0.05)
    assert world.service.resuming(preview_id)
    world.agents.state = "ready"
    await world.clock.advance(1)  # the resume's pause between two asks
    await world.service.route(preview_id, wait=5)
    assert (await world.store.get_preview(preview_id)).state == PreviewState.READY


async def test_a_suspended_preview_past_its_lifetime_is_destroyed(world: World) -> None:
    preview_id = await suspended_preview(world)
    await world.clock.advance(45 * 60)
    done = await maintenance_pass(world.service)
    assert done == [f"stop {preview_id}: reached its maximum lifetime of 60 min"]
    preview = await world.store.get_preview(preview_id)
    assert preview.state == PreviewState.STOPPED
    assert (await world.provider.get(preview.machine_id or "")).state == MachineState.DESTROYED


async def test_a_suspended_preview_can_be_deleted(world: World) -> None:
    preview_id = await suspended_preview(world)
    stopped = await world.service.delete(ALICE, preview_id)
    assert stopped.state == PreviewState.STOPPED
    assert (await world.provider.get(stopped.machine_id or "")).state == MachineState.DESTROYED


async def test_a_machine_that_cannot_be_suspended_is_stopped(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Fly above 2 GB of memory, or without a cgroup freezer locally, idleness stops the preview."""

    async def refuse(self: FakeProvider, machine_id: str) -> bool:
        return False

    monkeypatch.setattr(FakeProvider, "suspend", refuse)
    preview_id = await ready_preview(world)
    await world.clock.advance(15 * 60)
    assert await maintenance_pass(world.service) == [f"suspend {preview_id}: {IDLE}"]
    assert (await world.store.get_preview(preview_id)).state == PreviewState.STOPPED


async def test_idle_action_stop_stops_an_idle_preview(world: World) -> None:
    world.service.limits = replace(world.service.limits, idle_action="stop")
    preview_id = await ready_preview(world)
    await world.clock.advance(15 * 60)
    assert await maintenance_pass(world.service) == [f"stop {preview_id}: {IDLE}"]
    assert (await world.store.get_preview(preview_id)).state == PreviewState.STOPPED


async def test_a_suspended_preview_still_counts_against_its_owner(world: World) -> None:
    """It holds a machine (Fly bills a suspended one for its storage): MAX_CONTAINERS_PER_USER
    (3 here) counts it until it ends."""
    await suspended_preview(world)
    await ready_preview(world, "alice-two")
    await ready_preview(world, "alice-three")
    with pytest.raises(QuotaExceeded, match="3"):
        await world.service.create(ALICE, "alice-four")


class SlowResume:
    """The fake provider's resume, held until ``release`` is set (a Fly machine booting afresh)."""

    def __init__(self, provider: FakeProvider) -> None:
        self.release = asyncio.Event()
        self._resume = provider.resume

    async def __call__(self, machine_id: str) -> None:
        await self.release.wait()
        await self._resume(machine_id)


async def nobody(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("not a preview host")


async def test_a_browser_gets_a_progress_page_while_the_preview_resumes(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After 300 ms a browser's navigation is answered with a page that reloads itself; a script's
    request is held until the preview serves."""
    preview_id = await suspended_preview(world)
    slow = SlowResume(world.provider)
    monkeypatch.setattr(world.provider, "resume", slow)
    router = PreviewRouter(nobody, service=world.service, domain="preview.localhost")
    host = f"{preview_id}.preview.localhost"
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=router), base_url=f"http://{host}"
    ) as client:
        page = await client.get("/", headers={"accept": "text/html", "sec-fetch-mode": "navigate"})
        assert page.status_code == 503, page.text
        assert page.headers["retry-after"] == "1"
        assert '<meta http-equiv="refresh"' in page.text and "Resuming the preview" in page.text
        assert world.service.resuming(preview_id)
        held = asyncio.ensure_future(client.get("/src/main.jsx", headers={"accept": "*/*"}))
        await asyncio.sleep(0.5)
        assert not held.done(), "a script's request waits for the resume"
        slow.release.set()
        await held  # on to the (fake) machine, which nothing serves: what matters is it was let through
    assert (await world.store.get_preview(preview_id)).state == PreviewState.READY
