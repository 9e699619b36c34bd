"""HTTP through the proxy: streaming both ways, headers, and the answers when the upstream fails."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.proxy.harness import Activity, UpstreamApp, free_port, proxy_to, serve
from velocity.domain.errors import NotFound
from velocity.proxy import ReverseProxy, Upstream
from velocity.proxy.asgi import Scope


def _headers(echo: dict[str, object]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name, value in echo["headers"]:  # type: ignore[attr-defined]
        found.setdefault(name, []).append(value)
    return found


async def test_a_get_keeps_its_method_path_and_query(client: httpx.AsyncClient) -> None:
    """The upstream sees the request's method, percent-encoded path and query string unchanged."""
    response = await client.get("/a%2Fb/c?x=1&y=%20z")
    echo = response.json()
    assert response.status_code == 200
    assert (echo["method"], echo["raw_path"], echo["query"]) == ("GET", "/a%2Fb/c", "x=1&y=%20z")


async def test_hop_by_hop_headers_are_dropped_and_forwarded_headers_added(client: httpx.AsyncClient) -> None:
    """Connection-scoped headers stop at the proxy; X-Forwarded-* describe the original request."""
    response = await client.get(
        "/echo",
        headers={
            "Connection": "keep-alive, X-Secret-Hop",
            "X-Secret-Hop": "1",
            "Proxy-Authorization": "Basic Zm9vOmJhcg==",
            "X-Forwarded-For": "10.9.9.9",
            "X-Custom": "kept",
        },
    )
    headers = _headers(response.json())
    assert "x-secret-hop" not in headers
    assert "proxy-authorization" not in headers
    assert headers["x-custom"] == ["kept"]
    assert headers["x-forwarded-for"] == ["127.0.0.1"], "a client must not choose its forwarded address"
    assert headers["x-forwarded-proto"] == ["http"]
    assert headers["x-forwarded-host"] == [client.base_url.netloc.decode()]
    assert headers["host"] == [client.base_url.netloc.decode()], "the client's Host is kept by default"


async def test_the_host_header_and_extra_headers_come_from_the_upstream(upstream_url: str) -> None:
    """An upstream can rewrite Host (Vite's host check) and add its own headers."""
    upstream = Upstream(upstream_url, host_header="127.0.0.1:5173", headers={"X-Preview": "p1"})
    async with proxy_to(upstream) as client:
        headers = _headers((await client.get("/", headers={"X-Preview": "forged"})).json())
    assert headers["host"] == ["127.0.0.1:5173"]
    assert headers["x-preview"] == ["p1"]


async def test_forwarded_headers_from_a_trusted_proxy_are_extended(upstream_url: str) -> None:
    """Behind a trusted proxy the chain of addresses grows and the original host and scheme survive."""
    async with proxy_to(Upstream(upstream_url), trust_forwarded=True) as client:
        forwarded = {
            "X-Forwarded-For": "203.0.113.7",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "p.example",
        }
        headers = _headers((await client.get("/", headers=forwarded)).json())
    assert headers["x-forwarded-for"] == ["203.0.113.7, 127.0.0.1"]
    assert headers["x-forwarded-proto"] == ["https"]
    assert headers["x-forwarded-host"] == ["p.example"]


async def test_a_response_body_is_streamed_chunk_by_chunk(
    client: httpx.AsyncClient, upstream_app: UpstreamApp
) -> None:
    """The first chunk reaches the client while the upstream still holds back the last one."""
    async with asyncio.timeout(10), client.stream("GET", "/stream") as response:
        chunks = response.aiter_raw()
        assert await anext(chunks) == b"first"
        upstream_app.gate.set()
        assert b"".join([chunk async for chunk in chunks]) == b"second"


async def test_a_request_body_is_streamed_to_the_upstream(
    client: httpx.AsyncClient, upstream_app: UpstreamApp
) -> None:
    """The upstream receives the first part of a body before the client has produced the rest."""

    async def body() -> AsyncIterator[bytes]:
        yield b"a" * 1000
        await upstream_app.first_chunk.wait()
        yield b"b" * 1000

    async with asyncio.timeout(10):
        response = await client.post("/upload", content=body())
    assert response.json() == {"received": 2000}


async def test_a_post_body_with_a_length_arrives_whole(client: httpx.AsyncClient) -> None:
    """A plain body with Content-Length is forwarded as is, and the upstream's status comes back."""
    response = await client.post("/echo", content=b"x=1&y=2")
    assert response.status_code == 201
    assert response.json()["body"] == "x=1&y=2"
    assert _headers(response.json())["content-length"] == ["7"]


async def test_several_set_cookie_headers_survive(client: httpx.AsyncClient) -> None:
    """Repeated response headers stay repeated and hop-by-hop response headers are dropped."""
    response = await client.get("/cookies")
    assert response.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2; Path=/"]
    assert "keep-alive" not in response.headers


async def test_cookies_set_for_one_client_are_not_sent_for_another(client: httpx.AsyncClient) -> None:
    """The proxy's own HTTP client keeps no cookie jar."""
    await client.get("/cookies")
    client.cookies.clear()
    headers = _headers((await client.get("/echo")).json())
    assert "cookie" not in headers


async def test_a_compressed_body_is_passed_through_untouched(client: httpx.AsyncClient) -> None:
    """Content-Encoding and Content-Length still describe the bytes the client receives."""
    async with client.stream("GET", "/gzip", headers={"Accept-Encoding": "gzip"}) as response:
        raw = b"".join([chunk async for chunk in response.aiter_raw()])
    assert response.headers["content-encoding"] == "gzip"
    assert int(response.headers["content-length"]) == len(raw)
    assert gzip.decompress(raw) == b"hello " * 100


async def test_a_client_that_goes_away_stops_the_upstream_stream(
    client: httpx.AsyncClient, upstream_app: UpstreamApp
) -> None:
    """An endless stream (server-sent events) is dropped upstream once its client disconnects."""
    async with asyncio.timeout(10):
        async with client.stream("GET", "/endless") as response:
            assert (await anext(response.aiter_raw())).startswith(b"data: tick")
        await upstream_app.stream_abandoned.wait()


async def test_nothing_listening_upstream_is_a_502_with_a_clear_message() -> None:
    """A refused connection becomes a short plain-text 502 rather than an error page or a hang."""
    async with proxy_to(Upstream(f"http://127.0.0.1:{free_port()}")) as client:
        response = await client.get("/")
    assert response.status_code == 502
    assert response.headers["content-type"].startswith("text/plain")
    assert "cannot reach http://127.0.0.1" in response.text


async def test_a_get_on_a_kept_alive_connection_the_upstream_closed_is_sent_again() -> None:
    """Node.js closes idle kept-alive connections after 5 s; a request that goes out on one just as
    it closes is sent once more on a new connection instead of becoming a 502."""
    connections = 0

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        first = connections == 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\nok")
        await writer.drain()
        if first:  # the next request on this connection finds it closed without an answer
            with contextlib.suppress(asyncio.IncompleteReadError):
                await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(upstream, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with proxy_to(Upstream(f"http://127.0.0.1:{port}")) as client:
            assert (await client.get("/one")).text == "ok"
            second = await client.get("/two")
        assert second.status_code == 200 and second.text == "ok"
        assert connections == 2
    finally:
        server.close()
        await server.wait_closed()


async def test_an_upstream_that_does_not_answer_in_time_is_a_504(upstream_url: str) -> None:
    """A read timeout before the response starts becomes a 504."""
    async with proxy_to(Upstream(upstream_url), read_timeout=0.2) as client:
        response = await client.get("/silent")
    assert response.status_code == 504


async def test_an_upstream_on_a_unix_socket_is_reached(upstream_app: UpstreamApp, socket_dir: str) -> None:
    """A unix-socket upstream is dialled by path while the URL only names it."""
    path = f"{socket_dir}/up.sock"
    async with serve(upstream_app, uds=path), proxy_to(Upstream("http://agent", uds=path)) as client:
        response = await client.get("/over/uds?q=1")
    assert response.json()["raw_path"] == "/over/uds"
    assert _headers(response.json())["host"] == [client.base_url.netloc.decode()]


async def test_a_missing_unix_socket_is_a_502(socket_dir: str) -> None:
    """A socket path with no server behind it is a 502 that does not name the path."""
    path = f"{socket_dir}/gone.sock"
    async with proxy_to(Upstream("http://agent", uds=path)) as client:
        response = await client.get("/")
    assert response.status_code == 502
    assert path not in response.text


async def test_every_request_counts_as_activity(client: httpx.AsyncClient, activity: Activity) -> None:
    """on_activity is called once per request."""
    for _ in range(3):
        await client.get("/echo")
    assert activity.count == 3


@pytest.mark.parametrize("kind", ["http", "websocket"])
async def test_a_resolver_error_becomes_its_status(kind: str) -> None:
    """An error from the project's tree raised while resolving answers with its status and message."""

    async def resolve(scope: Scope) -> Upstream:
        raise NotFound("no such preview: p-404")

    proxy = ReverseProxy(resolve)
    async with serve(proxy) as url, httpx.AsyncClient(base_url=url) as client:
        if kind == "http":
            response = await client.get("/")
        else:
            headers = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13"}
            headers["Sec-WebSocket-Key"] = "dGhlIHNhbXBsZSBub25jZQ=="
            response = await client.get("/", headers=headers)
    await proxy.aclose()
    assert response.status_code == 404
    assert response.text == "no such preview: p-404\n"
