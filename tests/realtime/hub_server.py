"""A hub mounted at /realtime/v1 of a parent app, as the orchestrator mounts it, served by uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount
from tests.realtime.realtime_clients import JsClient, PyClient, RawClient
from tests.realtime.tokens import anon_key, verify

from velocity.clock import Clock
from velocity.realtime import ChannelAuthorizer, HubLimits, RealtimeHub, TokenVerifier, allow_all

TOPIC = "preview:proj-1"


@dataclass
class Served:
    """A running hub, its port, and clients of it that ``stop`` closes."""

    hub: RealtimeHub
    port: int
    server: uvicorn.Server
    task: asyncio.Task[None]
    apikey: str = field(default_factory=anon_key)
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/realtime/v1"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/realtime/v1/websocket"

    async def python(self, token: str | None = None) -> PyClient:
        client = PyClient(f"ws://127.0.0.1:{self.port}/realtime/v1", token or self.apikey)
        self._closers.append(client.close)
        return client

    async def js(self, *, vsn: str = "2.0.0", apikey: str | None = None) -> JsClient:
        client = await JsClient.start(
            f"ws://127.0.0.1:{self.port}/realtime/v1", apikey or self.apikey, vsn=vsn
        )
        self._closers.append(client.close)
        return client

    async def raw(self, *, vsn: str = "1.0.0", **options: Any) -> RawClient:
        client = await RawClient.connect(self.ws_url, self.apikey, vsn=vsn, **options)
        self._closers.append(client.close)
        return client

    async def stop(self) -> None:
        for close in reversed(self._closers):
            await close()
        await self.hub.close()
        self.server.should_exit = True
        await self.task


class _Server(uvicorn.Server):
    # The test process keeps its own signal handling.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_hub(
    *,
    limits: HubLimits | None = None,
    clock: Clock | None = None,
    authorizer: ChannelAuthorizer = allow_all,
    verifier: TokenVerifier = verify,
) -> Served:
    """Serve a hub on 127.0.0.1, port 0 (the kernel picks), and wait until it listens."""
    hub = RealtimeHub(verifier, limits=limits, clock=clock, authorizer=authorizer)
    app = Starlette(routes=[Mount("/realtime/v1", app=hub.app)])
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_config=None,
        lifespan="off",
        ws="websockets-sansio",
        ws_per_message_deflate=False,  # as the orchestrator should serve it (see HubLimits)
        timeout_graceful_shutdown=5,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(10):
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.005)
    port = server.servers[0].sockets[0].getsockname()[1]
    return Served(hub, port, server, task)


StartHub = Callable[..., Awaitable[Served]]
