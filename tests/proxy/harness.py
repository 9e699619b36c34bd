"""Real servers on real sockets: an upstream test app, and the proxy in front of it, both under uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import uvicorn

from velocity.proxy import ReverseProxy, Upstream
from velocity.proxy.asgi import Receive, Scope, Send

ASGIApp = Callable[[Scope, Receive, Send], Any]


class _Server(uvicorn.Server):
    # The test process keeps its own signal handling.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serve(app: ASGIApp, *, uds: str | None = None) -> AsyncIterator[str]:
    """Run ``app`` under uvicorn in this event loop; yields its base URL (``http://local`` for a socket)."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        uds=uds,
        log_config=None,
        lifespan="off",
        ws="websockets-sansio",
        timeout_graceful_shutdown=1,
        proxy_headers=False,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(10):
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.005)
    try:
        if uds:
            yield "http://local"
        else:
            port = server.servers[0].sockets[0].getsockname()[1]
            yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


class UpstreamApp:
    """The upstream under test; events let a test see and steer what happens on the far side."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.first_chunk = asyncio.Event()
        self.stream_abandoned = asyncio.Event()
        self.client_close: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        path = scope["path"]
        if path == "/stream":
            await _start(send, 200, [(b"content-type", b"text/plain")])
            await send({"type": "http.response.body", "body": b"first", "more_body": True})
            await self.gate.wait()
            await send({"type": "http.response.body", "body": b"second"})
        elif path == "/upload":
            received, chunks = 0, 0
            while True:
                message = await receive()
                received += len(message.get("body", b""))
                chunks += 1
                self.first_chunk.set()
                if not message.get("more_body"):
                    break
            await _json(send, {"received": received})
        elif path == "/cookies":
            headers = [
                (b"set-cookie", b"a=1; Path=/"),
                (b"set-cookie", b"b=2; Path=/"),
                (b"keep-alive", b"timeout=5"),
            ]
            await _start(send, 200, [*headers, (b"content-length", b"2")])
            await send({"type": "http.response.body", "body": b"ok"})
        elif path == "/gzip":
            body = gzip.compress(b"hello " * 100)
            headers = [(b"content-encoding", b"gzip"), (b"content-length", str(len(body)).encode())]
            await _start(send, 200, headers)
            await send({"type": "http.response.body", "body": body})
        elif path == "/endless":
            await self._endless(receive, send)
        elif path == "/silent":
            await asyncio.Event().wait()
        else:
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            seen = [[k.decode(), v.decode()] for k, v in scope["headers"]]
            echo = {
                "method": scope["method"],
                "path": scope["path"],
                "raw_path": scope["raw_path"].decode(),
                "query": scope["query_string"].decode(),
                "headers": seen,
                "body": body.decode(),
            }
            await _json(send, echo, status=201 if scope["method"] == "POST" else 200)

    async def _endless(self, receive: Receive, send: Send) -> None:
        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            self.stream_abandoned.set()

        watcher = asyncio.create_task(watch())
        await _start(send, 200, [(b"content-type", b"text/event-stream")])
        while not self.stream_abandoned.is_set():
            await send({"type": "http.response.body", "body": b"data: tick\n\n", "more_body": True})
            await asyncio.sleep(0.01)
        await watcher

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        if scope["path"] == "/refuse":
            await send({"type": "websocket.close", "code": 1008})
            return
        offered = scope.get("subprotocols") or []
        await send({"type": "websocket.accept", "subprotocol": offered[0] if offered else None})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                if not self.client_close.done():
                    self.client_close.set_result((message.get("code", 1000), message.get("reason") or ""))
                return
            if message.get("text", "").startswith("close:"):
                code = int(message["text"].split(":")[1])
                await send({"type": "websocket.close", "code": code, "reason": "bye"})
                return
            if message.get("text") == "headers":
                headers = {k.decode(): v.decode() for k, v in scope["headers"]}
                payload = {"headers": headers, "query": scope["query_string"].decode()}
                await send({"type": "websocket.send", "text": json.dumps(payload)})
                continue
            key = "bytes" if message.get("bytes") is not None else "text"
            await send({"type": "websocket.send", key: message[key]})


async def _start(send: Send, status: int, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})


async def _json(send: Send, payload: object, status: int = 200) -> None:
    body = json.dumps(payload).encode()
    await _start(
        send, status, [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    )
    await send({"type": "http.response.body", "body": body})


class Activity:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


@contextlib.asynccontextmanager
async def proxy_server(upstream: Upstream, **options: Any) -> AsyncIterator[str]:
    """The proxy in front of ``upstream``, served on 127.0.0.1; yields its base URL."""

    async def resolve(scope: Scope) -> Upstream:
        return upstream

    proxy = ReverseProxy(resolve, **options)
    try:
        async with serve(proxy) as url:
            yield url
    finally:
        await proxy.aclose()


@contextlib.asynccontextmanager
async def proxy_to(upstream: Upstream, **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The proxy in front of ``upstream``, and an HTTP client pointed at the proxy."""
    async with (
        proxy_server(upstream, **options) as url,
        httpx.AsyncClient(base_url=url, trust_env=False) as client,
    ):
        yield client


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
