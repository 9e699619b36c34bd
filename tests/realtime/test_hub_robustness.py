"""Frames the official clients never send, and clients that misbehave: errors, never a crash or a stall."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import socket
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.realtime.hub_server import TOPIC, Served, StartHub
from tests.realtime.realtime_clients import RawClient, eventually, kind
from velocity.realtime import HubLimits

WIRE_TOPIC = f"realtime:{TOPIC}"


def error_reply(reason: str) -> Any:
    return lambda m: (
        m["event"] == "phx_reply" and m["payload"] == {"status": "error", "response": {"reason": reason}}
    )


@pytest.mark.parametrize(
    ("vsn", "frame"),
    [
        ("1.0.0", "{not json"),
        ("1.0.0", '["a", "b"]'),
        ("1.0.0", b"\x03\x01\x02"),
        ("2.0.0", "[1, 2, 3]"),
        ("2.0.0", "null"),
        ("2.0.0", b"\x09garbage"),
        ("2.0.0", b"\x03\xff\xff\xff\xff\xff\x01"),
    ],
    ids=[
        "v1-bad-json",
        "v1-array",
        "v1-binary",
        "v2-short-array",
        "v2-null",
        "v2-unknown-kind",
        "v2-short-kind-3",
    ],
)
async def test_a_malformed_frame_gets_an_error_reply_and_the_connection_carries_on(
    served: Served, vsn: str, frame: str | bytes
) -> None:
    """The error comes back on topic ``phoenix``; the next heartbeat is answered as usual."""
    raw = await served.raw(vsn=vsn)
    await raw.socket.send(frame)
    reply = await raw.recv()
    assert (reply["topic"], reply["event"], reply["payload"]["status"]) == ("phoenix", "phx_reply", "error")
    assert reply["payload"]["response"]["reason"].startswith("MalformedMessage")
    ref = await raw.push("phoenix", "heartbeat", {})
    assert (await raw.recv())["ref"] == ref
    assert served.hub.stats().protocol_errors == 1


@pytest.mark.parametrize(
    ("vsn", "heartbeat", "ref"),
    [
        ("1.0.0", '{"event":"heartbeat","payload":{},"topic":"phoenix","ref":null,"join_ref":null}', None),
        ("1.0.0", '{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"10"}', "10"),
        ("2.0.0", '[null,"10","phoenix","heartbeat",{}]', "10"),
    ],
    ids=["python", "js-v1", "js-v2"],
)
async def test_a_heartbeat_is_answered_with_its_own_ref(
    served: Served, vsn: str, heartbeat: str, ref: Any
) -> None:
    """The heartbeats the clients send (recorded); realtime-js reconnects if the ref does not come back."""
    raw = await served.raw(vsn=vsn)
    await raw.socket.send(heartbeat)
    reply = await raw.recv()
    assert (reply["topic"], reply["ref"], reply.get("join_ref")) == ("phoenix", ref, None)
    assert reply["payload"] == {"status": "ok", "response": {}}


async def test_unknown_events_and_unjoined_topics_get_error_replies(served: Served) -> None:
    """Unknown events, on a channel or on ``phoenix``, and pushes to topics never joined."""
    raw = await served.raw()
    await raw.join(WIRE_TOPIC)
    ref = await raw.push(WIRE_TOPIC, "file_changed", {"path": "a"}, join_ref="1")
    unknown = await raw.reply(ref)
    assert unknown["payload"]["response"]["reason"].startswith("UnknownEvent: `file_changed`")
    ref = await raw.push("phoenix", "shutdown", {})
    assert (await raw.reply(ref))["payload"]["status"] == "error"
    ref = await raw.push("realtime:preview:elsewhere", "broadcast", {"type": "broadcast", "event": "x"})
    assert (await raw.reply(ref))["payload"] == {"status": "error", "response": {"reason": "unmatched topic"}}


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        (TOPIC, {"config": {}}, "TopicNameRequired: You must provide a topic name"),
        ("realtime:", {"config": {}}, "TopicNameRequired: You must provide a topic name"),
        ("realtime:" + "x" * 250, {"config": {}}, "TopicNameTooLong: a topic is at most 255 bytes"),
        (WIRE_TOPIC, {"config": "yes"}, "MalformedJoin: the join payload is {config: {...}, access_token?}"),
        (WIRE_TOPIC, [], "MalformedJoin: the join payload is {config: {...}, access_token?}"),
        (WIRE_TOPIC, {"config": {"broadcast": True}}, "MalformedJoin: `config.broadcast` must be an object"),
        (WIRE_TOPIC, {"config": {"postgres_changes": ["*"]}}, "MalformedJoin: `postgres_changes` must be a list of objects"),
    ],
    ids=["no-prefix", "empty", "too-long", "config-not-object", "payload-list", "broadcast-not-object", "bindings"],
)  # fmt: skip
async def test_a_malformed_join_is_refused_with_a_reason(
    served: Served, topic: str, payload: Any, reason: str
) -> None:
    """The join reply carries the Supabase-style ``Code: message`` reason."""
    raw = await served.raw()
    ref = await raw.push(topic, "phx_join", payload)
    assert (await raw.reply(ref))["payload"] == {"status": "error", "response": {"reason": reason}}


async def test_a_connection_may_join_only_so_many_channels(start_hub: StartHub) -> None:
    """Past the limit the join fails with the code the clients back off on; rejoining a topic is fine."""
    served = await start_hub(limits=HubLimits(max_channels_per_connection=2))
    raw = await served.raw()
    for topic in ("realtime:a", "realtime:b", "realtime:a"):
        assert (await raw.join(topic))["payload"]["status"] == "ok"
    refused = await raw.join("realtime:c")
    assert refused["payload"]["response"] == {"reason": "ChannelRateLimitReached: Too many channels"}


async def test_one_client_cannot_take_every_connection(start_hub: StartHub) -> None:
    """Past the per-client limit an upgrade gets Supabase's 429 ``Too many connected users`` while
    another client still connects; past the total, everyone does; a closed socket frees its place."""
    served = await start_hub(
        limits=HubLimits(max_connections=3, max_connections_per_client=2),
        client_key=lambda websocket: websocket.headers.get("x-client", "?"),
    )

    async def opened(client: str) -> Any:
        return await connect(
            f"{served.ws_url}?apikey={served.apikey}&vsn=1.0.0", additional_headers={"x-client": client}
        )

    async def refused(client: str) -> None:
        with pytest.raises(InvalidStatus) as denied:
            await opened(client)
        assert denied.value.response.status_code == 429
        assert json.loads(denied.value.response.body or b"{}") == {"error": "Too many connected users"}

    first, second = await opened("a"), await opened("a")
    await refused("a")
    third = await opened("b")
    await refused("c")  # three in all
    await first.close()
    await eventually(lambda: served.hub.stats().connections == 2)
    fourth = await opened("a")
    for ws in (second, third, fourth):
        await ws.close()


async def test_a_frame_over_the_limit_gets_an_error_and_others_are_unaffected(start_hub: StartHub) -> None:
    """The oversize broadcast is answered with PayloadTooLarge and not delivered; later ones are."""
    served = await start_hub(limits=HubLimits(max_frame_bytes=10_000))
    listener = await served.python()
    await listener.subscribe(TOPIC)
    raw = await served.raw(vsn="2.0.0")
    await raw.join(WIRE_TOPIC)
    big = {"type": "broadcast", "event": "file_changed", "payload": {"content": "x" * 20_000}}
    ref = await raw.push(WIRE_TOPIC, "broadcast", big, join_ref="1")
    reply = await raw.reply(ref)
    assert reply["payload"]["response"]["reason"].startswith("PayloadTooLarge: a frame of 20")
    await raw.push(
        WIRE_TOPIC, "broadcast", {"type": "broadcast", "event": "small", "payload": {}}, join_ref="1"
    )
    await listener.log.expect(kind("broadcast", event="small"))
    assert not listener.log.matching(kind("broadcast", event="file_changed"))


async def test_without_ack_a_broadcast_gets_no_reply(served: Served) -> None:
    """Only ``ack: true`` earns a reply: the next frame here is the heartbeat's."""
    raw = await served.raw(vsn="2.0.0")
    await raw.join(WIRE_TOPIC, {"broadcast": {"ack": False, "self": False}})
    await raw.push(WIRE_TOPIC, "broadcast", {"type": "broadcast", "event": "x", "payload": {}}, join_ref="1")
    ref = await raw.push("phoenix", "heartbeat", {})
    assert (await raw.recv())["ref"] == ref


async def test_a_second_join_of_a_topic_closes_the_first(served: Served) -> None:
    """Phoenix sends ``phx_close`` for the old join_ref, then answers the new join."""
    raw = await served.raw(vsn="2.0.0")
    await raw.push(WIRE_TOPIC, "phx_join", {"config": {}}, ref="1", join_ref="1")
    await raw.reply("1")
    await raw.push(WIRE_TOPIC, "phx_join", {"config": {}}, ref="2", join_ref="2")
    assert await raw.recv() == {
        "join_ref": "1",
        "ref": "1",
        "topic": WIRE_TOPIC,
        "event": "phx_close",
        "payload": {},
    }
    assert (await raw.recv())["payload"]["status"] == "ok"
    assert served.hub.stats().subscriptions == 1


async def test_a_leave_is_answered_then_closed_as_recorded_from_realtime_js(served: Served) -> None:
    """``["6","11",topic,"phx_reply",ok]`` then ``["6","6",topic,"phx_close",{}]``."""
    raw = await served.raw(vsn="2.0.0")
    await raw.push(WIRE_TOPIC, "phx_join", {"config": {}}, ref="6", join_ref="6")
    await raw.reply("6")
    await raw.push(WIRE_TOPIC, "phx_leave", {}, ref="11", join_ref="6")
    assert (
        await raw.socket.recv() == f'["6","11","{WIRE_TOPIC}","phx_reply",{{"status":"ok","response":{{}}}}]'
    )
    assert await raw.socket.recv() == f'["6","6","{WIRE_TOPIC}","phx_close",{{}}]'
    assert served.hub.stats().channels == 0


async def test_a_subscriber_that_stops_reading_is_dropped_and_the_others_get_everything(
    start_hub: StartHub, caplog: pytest.LogCaptureFixture
) -> None:
    """Bounded queues: the stalled connection is closed with a logged reason; fan-out never waits on it."""
    served = await start_hub(limits=HubLimits(queue_frames=16))
    # The stalled client: a small socket buffer and a read queue of one frame, never read from.
    # (Set before connecting: a buffer shrunk after the handshake drops segments instead of closing the window.)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", served.port))
    stalled = await served.raw(sock=sock, max_queue=1)
    await stalled.join(WIRE_TOPIC)
    fast = await served.raw(vsn="2.0.0")
    await fast.join(WIRE_TOPIC)
    sender = await served.raw()
    await sender.join(WIRE_TOPIC, {"broadcast": {"ack": True}})

    # Random text, so that per-message compression cannot shrink 20 MB into a few kilobytes.
    count, blob = 300, secrets.token_urlsafe(65_536)
    fast_got = asyncio.create_task(fast.next(lambda m: m["payload"]["payload"]["n"] == count - 1, within=30))
    for n in range(count):
        body = {"type": "broadcast", "event": "big", "payload": {"n": n, "blob": blob}}
        await sender.reply(await sender.push(WIRE_TOPIC, "broadcast", body), within=10)
    await fast_got

    assert served.hub.stats().dropped_connections == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("(1013): too slow: 16 frames waiting to be sent" in message for message in warnings)
    # Reading again, the stalled client gets what was already in flight, then its connection ends.
    received = await drain(stalled)
    assert 0 < received < count
    await eventually(lambda: served.hub.stats().connections == 2)


async def drain(client: RawClient) -> int:
    frames = 0
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(10):
            async for _ in client.socket:
                frames += 1
    return frames


async def test_a_silent_connection_is_closed_after_the_idle_timeout(start_hub: StartHub) -> None:
    """No frame (not even a heartbeat) for ``idle_timeout`` seconds ends the connection."""
    served = await start_hub(limits=HubLimits(idle_timeout=0.2))
    raw = await served.raw()
    async with asyncio.timeout(5):
        await raw.socket.wait_closed()
    assert (raw.socket.close_code, raw.socket.close_reason) == (1000, "no frame for 0.2 s")


async def test_closing_the_hub_closes_its_connections_and_refuses_new_ones(served: Served) -> None:
    """``close()`` sends 1001 to everyone and answers later upgrades with 503."""
    raw = await served.raw()
    await raw.join(WIRE_TOPIC)
    await served.hub.close()
    async with asyncio.timeout(5):
        await raw.socket.wait_closed()
    assert raw.socket.close_code == 1001
    with pytest.raises(Exception, match="503"):
        await connect(f"{served.ws_url}?apikey={served.apikey}")
    assert served.hub.stats().subscriptions == 0
