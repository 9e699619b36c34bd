"""WebSockets through the proxy: accepted only after the upstream, frames both ways, closes passed on."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from tests.proxy.harness import Activity, UpstreamApp, free_port, proxy_server, serve
from velocity.proxy import Upstream


@pytest.fixture(params=["tcp", "uds"])
async def proxy_url(
    request: pytest.FixtureRequest,
    upstream_app: UpstreamApp,
    upstream_url: str,
    socket_dir: str,
    activity: Activity,
) -> AsyncIterator[str]:
    """The proxy's ws:// URL, in front of the upstream on TCP or on a unix socket."""
    if request.param == "tcp":
        async with proxy_server(Upstream(upstream_url), on_activity=activity) as url:
            yield url.replace("http://", "ws://")
        return
    path = f"{socket_dir}/up.sock"
    upstream = Upstream("http://agent", uds=path)
    async with serve(upstream_app, uds=path), proxy_server(upstream, on_activity=activity) as url:
        yield url.replace("http://", "ws://")


async def test_text_and_binary_frames_are_echoed_with_the_chosen_subprotocol(proxy_url: str) -> None:
    """Frames of both kinds cross both ways, and the upstream's subprotocol is the one accepted."""
    async with asyncio.timeout(10), connect(f"{proxy_url}/ws", subprotocols=[Subprotocol("vite-hmr")]) as ws:
        assert ws.subprotocol == "vite-hmr"
        await ws.send("hello")
        assert await ws.recv() == "hello"
        await ws.send(b"\x00\x01\xff")
        assert await ws.recv() == b"\x00\x01\xff"


async def test_the_handshake_carries_the_query_and_forwarded_headers(proxy_url: str) -> None:
    """The upstream handshake keeps the query string and the client's headers, minus its handshake."""
    async with (
        asyncio.timeout(10),
        connect(f"{proxy_url}/ws?token=abc", additional_headers={"X-Custom": "1"}) as ws,
    ):
        await ws.send("headers")
        seen = json.loads(await ws.recv())
    assert seen["query"] == "token=abc"
    assert seen["headers"]["x-custom"] == "1"
    assert seen["headers"]["x-forwarded-proto"] == "http"
    assert seen["headers"]["host"] == proxy_url.removeprefix("ws://")


async def test_an_upstream_close_code_reaches_the_client(proxy_url: str) -> None:
    """When the upstream closes with a code and reason, the client sees the same."""
    async with asyncio.timeout(10), connect(f"{proxy_url}/ws") as ws:
        await ws.send("close:4001")
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    assert (ws.close_code, ws.close_reason) == (4001, "bye")


async def test_a_client_close_code_reaches_the_upstream(proxy_url: str, upstream_app: UpstreamApp) -> None:
    """When the client closes, the upstream connection is closed with the client's code."""
    async with asyncio.timeout(10):
        async with connect(f"{proxy_url}/ws") as ws:
            await ws.send("ping")
            await ws.recv()
            await ws.close(4002, "done")
        assert await upstream_app.client_close == (4002, "done")


async def test_a_refused_websocket_gets_the_upstream_status(proxy_url: str) -> None:
    """An upstream that refuses the handshake is answered with its status, and nothing is accepted."""
    with pytest.raises(InvalidStatus) as refused:
        async with asyncio.timeout(10), connect(f"{proxy_url}/refuse"):
            pass
    assert refused.value.response.status_code == 403


async def test_a_websocket_to_nowhere_is_a_502() -> None:
    """With nothing listening upstream the client's handshake ends in a 502."""
    async with proxy_server(Upstream(f"http://127.0.0.1:{free_port()}")) as url:
        with pytest.raises(InvalidStatus) as refused:
            async with asyncio.timeout(10), connect(f"{url.replace('http', 'ws')}/ws"):
                pass
        assert refused.value.response.status_code == 502
        assert b"cannot reach" in refused.value.response.body


async def test_every_frame_counts_as_activity(proxy_url: str, activity: Activity) -> None:
    """The handshake and each frame in either direction call on_activity."""
    async with asyncio.timeout(10), connect(f"{proxy_url}/ws") as ws:
        for _ in range(3):
            await ws.send("x")
            await ws.recv()
    assert activity.count == 1 + 3 * 2


async def _raw_handshake_then_ask_headers(url: str, host: str) -> dict[str, str]:
    """Open a WebSocket by hand (to send any Host), ask the upstream for the headers it saw."""
    address = url.removeprefix("ws://")
    ip, port = address.split(":")
    reader, writer = await asyncio.open_connection(ip, int(port))
    writer.write(
        f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    mask = b"\x01\x02\x03\x04"
    payload = bytes(byte ^ mask[i % 4] for i, byte in enumerate(b"headers"))
    writer.write(bytes([0x81, 0x80 | 7]) + mask + payload)
    head = await reader.readexactly(2)
    length = head[1] & 0x7F
    if length == 126:
        length = int.from_bytes(await reader.readexactly(2), "big")
    seen: dict[str, str] = json.loads(await reader.readexactly(length))["headers"]
    writer.close()
    await writer.wait_closed()
    return seen


async def test_a_host_with_uri_syntax_is_not_spliced_into_the_upstream_uri(
    upstream_url: str,
) -> None:
    """A Host like user@evil cannot smuggle credentials or a path into the upstream handshake."""
    async with asyncio.timeout(10), proxy_server(Upstream(upstream_url)) as url:
        seen = await _raw_handshake_then_ask_headers(url.replace("http://", "ws://"), "user:pw@evil.example")
    assert seen["host"] == upstream_url.removeprefix("http://")
    assert "authorization" not in seen
    assert seen["x-forwarded-host"] == "user:pw@evil.example"
