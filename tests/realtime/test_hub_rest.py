"""The REST broadcast endpoints: 202 and delivery to both serializers, clear 4xx for everything else."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.realtime.hub_server import TOPIC, Served, StartHub
from tests.realtime.realtime_clients import kind
from tests.realtime.tokens import user_token
from velocity.realtime import HubLimits


async def test_a_batch_broadcast_is_accepted_with_202_and_reaches_both_serializers(
    served: Served, node: str
) -> None:
    """``POST /api/broadcast`` delivers each message; an ``id`` becomes ``meta.id``."""
    py = await served.python()
    await py.subscribe(TOPIC)
    js = await served.js()
    await js.command("subscribe", topic=TOPIC)
    body = {
        "messages": [
            {"topic": TOPIC, "event": "status", "payload": {"state": "installing"}, "id": "m-1"},
            {"topic": TOPIC, "event": "status", "payload": {"state": "ready"}},
            {"topic": "preview:nobody-listens", "event": "status", "payload": {}},
        ]
    }
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{served.http_url}/api/broadcast", json=body, headers={"apikey": served.apikey}
        )
    assert (response.status_code, response.content) == (202, b"")
    first = await js.log.expect(kind("broadcast", event="status"))
    assert (first["payload"], first["meta"]) == ({"state": "installing"}, {"id": "m-1"})
    assert (await js.log.expect(kind("broadcast", event="status")))["payload"] == {"state": "ready"}
    assert (await py.log.expect(kind("broadcast", event="status")))["payload"] == {"state": "installing"}
    assert (await py.log.expect(kind("broadcast", event="status")))["payload"] == {"state": "ready"}


async def test_the_official_clients_http_send_reaches_the_other_client(served: Served, node: str) -> None:
    """Python ``http_send()`` and JS ``httpSend()`` use the single-message endpoint and get 202."""
    py = await served.python()
    channel = await py.subscribe(TOPIC)
    js = await served.js()
    await js.command("subscribe", topic=TOPIC)
    await channel.http_send("log", {"stream": "stdout", "line": "VITE ready"})
    assert (await js.log.expect(kind("broadcast", event="log")))["payload"]["line"] == "VITE ready"
    assert await js.command("httpSend", topic=TOPIC, event="file_deleted", payload={"path": "a.ts"}) is True
    assert (await py.log.expect(kind("broadcast", event="file_deleted")))["payload"] == {"path": "a.ts"}


async def test_an_octet_stream_body_is_a_binary_broadcast_for_v2_clients_only(
    served: Served, node: str
) -> None:
    """JS receives the bytes (kind 4); the Python client (vsn 1.0.0) is skipped, as by Supabase."""
    py = await served.python()
    await py.subscribe(TOPIC)
    js = await served.js()
    await js.command("subscribe", topic=TOPIC)
    url = f"{served.http_url}/api/broadcast/preview%3Aproj-1/events/blob"
    async with httpx.AsyncClient() as http:
        headers = {"Authorization": f"Bearer {user_token()}", "Content-Type": "application/octet-stream"}
        response = await http.post(url, content=b"\x00\x01\xfe", headers=headers)
        assert response.status_code == 202
        await http.post(
            f"{served.http_url}/api/broadcast/{TOPIC}/events/after?apikey={served.apikey}", json={}
        )
    assert (await js.log.expect(kind("broadcast", event="blob")))["payload"] == {"hex": "0001fe"}
    await py.log.expect(kind("broadcast", event="after"))
    assert not py.log.matching(kind("broadcast", event="blob"))


async def test_a_private_broadcast_reaches_only_private_subscribers(served: Served) -> None:
    """``private`` and public channels of one name are distinct, as in Supabase Realtime."""
    raw = await served.raw()
    await raw.join(f"realtime:{TOPIC}", {"private": True})
    body = {"messages": [{"topic": TOPIC, "event": "public_one", "payload": {}},
                         {"topic": TOPIC, "event": "private_one", "payload": {}, "private": True}]}  # fmt: skip
    async with httpx.AsyncClient() as http:
        await http.post(f"{served.http_url}/api/broadcast", json=body, headers={"apikey": served.apikey})
    assert (await raw.recv())["payload"]["event"] == "private_one"


KEYED = {"apikey": "<the hub's anon key>"}


@pytest.mark.parametrize(
    ("path", "headers", "content", "status", "error"),
    [
        ("/api/broadcast", {}, b'{"messages": []}', 401, "API key is missing"),
        ("/api/broadcast", {"apikey": "nope"}, b"{}", 401, "The token provided is not a valid JWT"),
        ("/api/broadcast", {"Authorization": "Bearer nope"}, b"{}", 401, "The token provided is not a valid JWT"),
        ("/api/broadcast", KEYED, b"{not json", 422, "the body is not JSON"),
        ("/api/broadcast", KEYED, b'{"messages": []}', 422, "the body is"),
        ("/api/broadcast", KEYED, b'{"messages": [{"event": "x", "payload": {}}]}', 422, "messages[0] needs"),
        ("/api/broadcast", KEYED, b'{"messages": [{"topic": "t", "event": "x"}]}', 422, "needs a `payload`"),
        ("/api/broadcast", KEYED, b'{"messages": ["x"]}', 422, "messages[0] must be an object"),
        ("/api/broadcast", KEYED, b'{"messages": [{"topic": "t", "event": "x", "payload": "' + b"x" * 5000 + b'"}]}',
         413, "exceeds the limit"),
        ("/api/broadcast/t/events/e", {**KEYED, "Content-Type": "text/plain"}, b"hi", 415, "application/json"),
        ("/api/broadcast/t/events/e", KEYED, b"[1, 2", 422, "the body is not JSON"),
        ("/api/broadcast/t/events/e", KEYED, b"[1, 2]", 422, "must be an object"),
        ("/api/broadcast", KEYED, b'{"messages": [{"topic": "t", "event": "x", "payload": 3}]}', 422,
         "needs a `payload` object"),
    ],
    ids=["no-key", "bad-apikey", "bad-bearer", "not-json", "no-messages", "no-topic", "no-payload",
         "not-an-object", "too-large", "content-type", "single-not-json", "single-list", "payload-number"],
)  # fmt: skip
async def test_bad_rest_requests_get_a_4xx_with_a_json_error(
    start_hub: StartHub, path: str, headers: dict[str, str], content: bytes, status: int, error: str
) -> None:
    """Never a 500: each bad request names its problem in ``error``."""
    served = await start_hub(limits=HubLimits(max_frame_bytes=4096))
    if headers.get("apikey") == KEYED["apikey"]:
        headers = {**headers, "apikey": served.apikey}
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{served.http_url}{path}", content=content, headers=headers)
    body: dict[str, Any] = response.json()
    assert response.status_code == status
    assert error in body["error"]
