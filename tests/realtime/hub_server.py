"""A hub mounted at /realtime/v1 of a parent app, as the orchestrator mounts it, served by uvicorn."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from tests.realtime.realtime_clients import JsClient, PyClient, RawClient, eventually
from tests.realtime.tokens import anon_key, verify
from velocity.clock import Clock
from velocity.realtime import ChannelAuthorizer, HubLimits, RealtimeHub, TokenVerifier, allow_all
from velocity.realtime.hub import ClientKey

TOPIC = "preview:proj-1"


@dataclass
class Served:
    """A running hub, its port, and clients of it that ``stop`` closes."""

    hub: RealtimeHub
    port: int
    server: uvicorn.Server
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
        # uvicorn's own shutdown waits in 100 ms steps; with every client gone, closing the listener
        # and letting the connection tasks finish is the same, without the waits.
        for connection in list(self.server.server_state.connections):
            connection.shutdown()
        for listener in self.server.servers:
            listener.close()
        await eventually(lambda: not self.server.server_state.tasks)


async def serve_hub(
    *,
    limits: HubLimits | None = None,
    clock: Clock | None = None,
    authorizer: ChannelAuthorizer = allow_all,
    verifier: TokenVerifier = verify,
    client_key: ClientKey | None = None,
) -> Served:
    """Serve a hub under uvicorn on 127.0.0.1, port 0 (the kernel picks), in this event loop."""
    hub = RealtimeHub(verifier, limits=limits, clock=clock, authorizer=authorizer, client_key=client_key)
    app = Starlette(routes=[Mount("/realtime/v1", app=hub.app)])
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_config=None,
        lifespan="off",
        ws="websockets-sansio",
        ws_per_message_deflate=False,  # as the orchestrator should serve it (see HubLimits)
    )
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    await server.startup()
    port = server.servers[0].sockets[0].getsockname()[1]
    return Served(hub, port, server)


StartHub = Callable[..., Awaitable[Served]]
