"""The official clients against the hub: Python ``realtime`` (vsn 1.0.0) and ``@supabase/realtime-js``."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from realtime import RealtimeAcknowledgementStatus
from tests.realtime.hub_server import TOPIC, Served
from tests.realtime.realtime_clients import Event, eventually, kind
from tests.realtime.tokens import user_token

FILE = {"path": "src/App.tsx", "content": "export default () => <h1>Hi</h1>", "encoding": "utf8"}


def has_key(key: str) -> Callable[[Event], bool]:
    return lambda e: e["type"] == "presence" and key in e["state"]


async def test_the_python_client_subscribes_and_hears_its_own_broadcast_when_joined_with_self(
    served: Served,
) -> None:
    """vsn 1.0.0: the join reply makes it SUBSCRIBED; ``self: true`` echoes the sender's broadcast."""
    py = await served.python()
    await py.subscribe(TOPIC, echo_self=True)
    await py.log.expect(kind("status", status="SUBSCRIBED"))
    await py.channels[TOPIC].send_broadcast("file_changed", FILE)
    received = await py.log.expect(kind("broadcast", event="file_changed"))
    assert received["payload"] == FILE


@pytest.mark.parametrize("vsn", ["2.0.0", "1.0.0"])
async def test_a_js_broadcast_reaches_a_python_subscriber(served: Served, node: str, vsn: str) -> None:
    """JS sends a binary kind-3 frame (vsn 2.0.0) or JSON text (1.0.0); Python gets the same JSON."""
    py = await served.python()
    await py.subscribe(TOPIC)
    js = await served.js(vsn=vsn)
    assert await js.command("subscribe", topic=TOPIC) == "SUBSCRIBED"
    assert await js.command("send", topic=TOPIC, event="file_changed", payload=FILE) == "ok"
    received = await py.log.expect(kind("broadcast", event="file_changed"))
    assert received["payload"] == FILE


@pytest.mark.parametrize("vsn", ["2.0.0", "1.0.0"])
async def test_a_python_broadcast_reaches_a_js_subscriber(served: Served, node: str, vsn: str) -> None:
    """The agent's direction: Python sends ``status``, JS (either serializer) receives it."""
    js = await served.js(vsn=vsn)
    assert await js.command("subscribe", topic=TOPIC) == "SUBSCRIBED"
    py = await served.python()
    await py.subscribe(TOPIC)
    status = {"state": "ready", "detail": "vite ready", "at": "2026-01-01T00:00:00Z"}
    await py.channels[TOPIC].send_broadcast("status", status)
    received = await js.log.expect(kind("broadcast", event="status"))
    assert received["payload"] == status


async def test_js_clients_on_either_serializer_hear_each_other(served: Served, node: str) -> None:
    """A kind-3 frame from a vsn 2.0.0 client reaches a vsn 1.0.0 JS client as JSON text, and back."""
    v2, v1 = await served.js(vsn="2.0.0"), await served.js(vsn="1.0.0")
    for client in (v2, v1):
        assert await client.command("subscribe", topic=TOPIC) == "SUBSCRIBED"
    await v2.command("send", topic=TOPIC, event="file_changed", payload=FILE)
    assert (await v1.log.expect(kind("broadcast", event="file_changed")))["payload"] == FILE
    await v1.command("send", topic=TOPIC, event="file_deleted", payload={"path": "old.ts"})
    assert (await v2.log.expect(kind("broadcast", event="file_deleted")))["payload"] == {"path": "old.ts"}


async def test_without_self_neither_client_hears_its_own_broadcast(served: Served, node: str) -> None:
    """``self: false`` (the default): the other client hears it, the sender does not."""
    py = await served.python()
    await py.subscribe(TOPIC)
    js = await served.js()
    await js.command("subscribe", topic=TOPIC)
    await py.channels[TOPIC].send_broadcast("from_py", {"n": 1})
    await js.command("send", topic=TOPIC, event="from_js", payload={"n": 2})
    await js.log.expect(kind("broadcast", event="from_py"))
    await py.log.expect(kind("broadcast", event="from_js"))
    # Each has now heard the other's later broadcast, so an echo of its own would already be here.
    assert not js.log.matching(kind("broadcast", event="from_js"))
    assert not py.log.matching(kind("broadcast", event="from_py"))


async def test_with_ack_the_hub_replies_to_each_broadcast(served: Served, node: str) -> None:
    """JS ``send()`` resolves ``ok`` from the hub's reply (else it times out); Python's push gets Ok."""
    js = await served.js()
    await js.command("subscribe", topic=TOPIC, config={"broadcast": {"ack": True}})
    assert await js.command("send", topic=TOPIC, event="ping", payload={}) == "ok"

    py = await served.python()
    await py.subscribe(TOPIC, ack=True)
    push = await py.channels[TOPIC].push("broadcast", {"type": "broadcast", "event": "ping", "payload": {}})
    push.receive(RealtimeAcknowledgementStatus.Ok, lambda _: py.log.add({"type": "acked"}))
    await py.log.expect(kind("acked"))


async def test_presence_state_and_diffs_reach_both_clients(served: Served, node: str) -> None:
    """Tracks from each side show up on the other; untrack and leave remove them."""
    js = await served.js()
    await js.command("subscribe", topic=TOPIC, config={"presence": {"key": "editor", "enabled": True}})
    await js.command("track", topic=TOPIC, meta={"role": "editor"})
    py = await served.python()
    await py.subscribe(TOPIC, presence_key="agent")
    # The join's presence_state already holds the editor tracked before the agent joined.
    seen = await py.log.expect(has_key("editor"))
    assert seen["state"]["editor"][0]["role"] == "editor"

    await py.channels[TOPIC].track({"state": "ready"})
    state = (await js.log.expect(has_key("agent")))["state"]
    assert state["agent"][0]["state"] == "ready"
    assert set(state) == {"editor", "agent"}

    assert await js.command("untrack", topic=TOPIC) == "ok"
    await py.log.expect(
        lambda e: e["type"] == "presence" and "editor" not in e["state"] and "agent" in e["state"]
    )
    await py.channels[TOPIC].unsubscribe()
    await js.log.expect(lambda e: e["type"] == "presence" and e["state"] == {})


async def test_leaving_closes_the_channel_for_either_client(served: Served, node: str) -> None:
    """``phx_leave`` gets its reply and ``phx_close``: JS resolves ``ok``, both report CLOSED."""
    js = await served.js()
    await js.command("subscribe", topic=TOPIC)
    assert await js.command("unsubscribe", topic=TOPIC) == "ok"
    await js.log.expect(kind("status", status="CLOSED"))
    # realtime-js resolves before the hub answers; the hub's side is that the subscription is gone.
    await eventually(lambda: served.hub.stats().subscriptions == 0)

    py = await served.python()
    await py.subscribe(TOPIC)
    await py.channels[TOPIC].unsubscribe()
    await py.log.expect(kind("status", status="CLOSED"))
    assert served.hub.stats().subscriptions == 0


@pytest.mark.parametrize("vsn", ["2.0.0", "1.0.0"])
async def test_realtime_js_accepts_the_heartbeat_reply(served: Served, node: str, vsn: str) -> None:
    """The client matches the reply's ref to its heartbeat; a mismatch would make it reconnect."""
    js = await served.js(vsn=vsn)
    await js.command("subscribe", topic=TOPIC)
    assert await js.command("heartbeat") == "ok"


async def test_js_postgres_changes_bindings_get_ids_and_subscribe(served: Served, node: str) -> None:
    """The join reply echoes each binding with an integer id, in order, or realtime-js errors the channel."""
    js = await served.js()
    bindings = [
        {"event": "*", "schema": "public", "table": "files", "filter": "project_id=eq.proj-1"},
        {"event": "INSERT", "schema": "public", "table": "logs"},
    ]
    assert await js.command("subscribe", topic=TOPIC, postgres=bindings) == "SUBSCRIBED"


async def test_a_raw_binary_broadcast_reaches_v2_peers_only(served: Served, node: str) -> None:
    """An ArrayBuffer payload goes to JS as bytes (kind 4); Python (vsn 1.0.0) never sees it."""
    sender, receiver = await served.js(), await served.js()
    for client in (sender, receiver):
        await client.command("subscribe", topic=TOPIC)
    py = await served.python()
    await py.subscribe(TOPIC)
    await sender.command("send", topic=TOPIC, event="blob", hex="00ff10")
    await sender.command("send", topic=TOPIC, event="after", payload={})
    assert (await receiver.log.expect(kind("broadcast", event="blob")))["payload"] == {"hex": "00ff10"}
    await py.log.expect(kind("broadcast", event="after"))
    assert not py.log.matching(kind("broadcast", event="blob"))


async def test_a_refreshed_user_token_keeps_the_channel_and_a_bad_one_closes_it(served: Served) -> None:
    """``access_token`` gets no reply; a bad one ends the channel with a system error and phx_close."""
    py = await served.python()
    await py.subscribe(TOPIC, echo_self=True)
    await py.client.set_auth(user_token())
    await py.channels[TOPIC].send_broadcast("still_here", {})
    await py.log.expect(kind("broadcast", event="still_here"))
    assert not py.log.matching(kind("status", status="CHANNEL_ERROR"))

    await py.client.set_auth(user_token(ttl=-120))
    error = await py.log.expect(kind("status", status="CHANNEL_ERROR"))
    assert "Token has expired" in error["error"]
    await py.log.expect(kind("status", status="CLOSED"))
    assert served.hub.stats().subscriptions == 0


async def test_a_bad_js_token_refresh_gets_the_system_error_then_closed(served: Served, node: str) -> None:
    """realtime-js passes the ``system`` payload to ``.on('system')`` and ends CLOSED."""
    js = await served.js()
    await js.command("subscribe", topic=TOPIC)
    await js.command("setAuth", token="not-a-jwt")
    system: Event = await js.log.expect(kind("system"))
    assert system["payload"] == {
        "extension": "system", "status": "error", "message": "The token provided is not a valid JWT",
        "channel": TOPIC,
    }  # fmt: skip
    await js.log.expect(kind("status", status="CLOSED"))
