"""A preview's event stream: its state changes from the store, its agent's messages from the channel."""

from __future__ import annotations

import pytest

from tests.service.world import ALICE, BOB, World
from velocity.domain import NotFound, Unauthorized
from velocity.realtime import Claims, RealtimeHub
from velocity.service.events import PreviewEvents


async def no_tokens(token: str, /) -> Claims:
    raise Unauthorized("no client connects in these tests")


@pytest.fixture
def hub() -> RealtimeHub:
    return RealtimeHub(no_tokens)


async def test_the_stream_follows_states_and_the_agents_messages_until_the_preview_ends(
    world: World, hub: RealtimeHub
) -> None:
    """Replayed and live states in order, this preview's status and log; then the stream ends."""
    events = PreviewEvents(world.service, listen=hub.listen)
    preview, _ = await world.service.create(ALICE, "alice-one")
    stream = events.stream(ALICE, preview.id)
    first = await anext(stream)
    assert first is not None and (first.kind, first.data["state"]) == ("state", "provisioning")
    topic = "preview:alice-one"
    hub.publish(topic, "status", {"state": "installing", "detail": "npm ci", "preview_id": preview.id})
    hub.publish(topic, "status", {"state": "ready", "preview_id": "an-older-one"})
    hub.publish(topic, "file_changed", {"path": "src/App.jsx", "content": "", "encoding": "utf8"})
    hub.publish(topic, "log", {"stream": "stdout", "line": "VITE ready"})
    await world.service.settled(preview.id, timeout=5)
    await world.service.delete(ALICE, preview.id)
    rest = [event async for event in stream if event is not None]
    states = [event.data["state"] for event in [first, *rest] if event.kind == "state"]
    assert states == ["provisioning", "booting", "ready", "stopping", "stopped"]
    ids = [event.id for event in [first, *rest] if event.kind == "state"]
    assert ids == sorted(ids) and None not in ids
    agent = [(event.kind, event.data) for event in rest if event.kind != "state"]
    assert agent == [
        ("status", {"state": "installing", "detail": "npm ci", "preview_id": preview.id}),
        ("log", {"stream": "stdout", "line": "VITE ready"}),
    ]


async def test_an_ended_preview_replays_its_history_and_a_resumed_stream_skips_what_it_had(
    world: World,
) -> None:
    """After Last-Event-ID only later states come; the stream of an ended preview ends by itself."""
    events = PreviewEvents(world.service, listen=None)
    preview, _ = await world.service.create(ALICE, "alice-one")
    await world.service.settled(preview.id, timeout=5)
    await world.service.delete(ALICE, preview.id)
    everything = [event async for event in events.stream(ALICE, preview.id) if event is not None]
    assert len(everything) == 5
    resumed = [event async for event in events.stream(ALICE, preview.id, after_id=everything[2].id or 0)]
    assert [event.data["state"] for event in resumed if event] == ["stopping", "stopped"]


async def test_a_quiet_stream_sends_keepalives_and_someone_elses_preview_is_not_found(world: World) -> None:
    """None (a keepalive) after the quiet interval; another user's preview is NotFound."""
    events = PreviewEvents(world.service, listen=None, keepalive=0.01)
    preview, _ = await world.service.create(ALICE, "alice-one")
    await world.service.settled(preview.id, timeout=5)
    stream = events.stream(ALICE, preview.id)
    seen = [await anext(stream) for _ in range(4)]
    assert seen[-1] is None
    await stream.aclose()
    with pytest.raises(NotFound):
        await anext(events.stream(BOB, preview.id))


async def test_closing_ends_every_open_stream(world: World) -> None:
    """The orchestrator's shutdown does not wait for streams of previews still live."""
    events = PreviewEvents(world.service, listen=None)
    preview, _ = await world.service.create(ALICE, "alice-one")
    await world.service.settled(preview.id, timeout=5)
    stream = events.stream(ALICE, preview.id)
    for _ in range(3):
        await anext(stream)
    await events.aclose()
    assert [event async for event in stream] == []
