"""The hub: an ASGI app that the orchestrator mounts at ``/realtime/v1``.

    hub = RealtimeHub(verifier)          # verifier: token -> claims, or raises Unauthorized
    app.mount("/realtime/v1", hub.app)   # GET /websocket, POST /api/broadcast[/{topic}/events/{event}]
    hub.listen("preview:p1", listener)   # server-side: listener(event, payload) for each broadcast
    ...
    await hub.close()                    # in the orchestrator's shutdown

The connect-time key is checked before the upgrade: a missing or bad key gets HTTP 401 with
``{"error": "..."}``, an unknown ``vsn`` HTTP 400, as Supabase Realtime answers them.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from velocity.clock import Clock, SystemClock
from velocity.domain.errors import Unauthorized
from velocity.realtime.auth import ChannelAuthorizer, Claims, TokenVerifier, allow_all
from velocity.realtime.channels import Listener
from velocity.realtime.connection import GOING_AWAY, Connection
from velocity.realtime.core import HubCore, HubLimits, HubStats
from velocity.realtime.rest import BroadcastEndpoints
from velocity.realtime.serializers import serializer_for
from velocity.realtime.session import Session

logger = logging.getLogger(__name__)


class RealtimeHub:
    def __init__(
        self,
        verifier: TokenVerifier,
        *,
        authorizer: ChannelAuthorizer = allow_all,
        limits: HubLimits | None = None,
        clock: Clock | None = None,
        client_key: ClientKey | None = None,
    ) -> None:
        """``client_key`` names the client a websocket counts against for
        ``max_connections_per_client``; by default its address."""
        self._core = HubCore(
            verifier=verifier,
            authorizer=authorizer,
            limits=limits or HubLimits(),
            clock=clock or SystemClock(),
        )
        self._live: dict[Connection, asyncio.Task[Any]] = {}
        self._per_client: collections.Counter[str] = collections.Counter()
        self._client_key = client_key or _address
        self._closed = False
        rest = BroadcastEndpoints(self._core)
        self.app = Starlette(
            routes=[
                WebSocketRoute("/websocket", self._websocket),
                Route("/api/broadcast", rest.batch, methods=["POST"]),
                Route("/api/broadcast/{topic:path}/events/{event}", rest.single, methods=["POST"]),
            ]
        )

    @property
    def limits(self) -> HubLimits:
        return self._core.limits

    def publish(self, topic: str, event: str, payload: Any, *, private: bool = False) -> int:
        """Broadcast from the server to ``topic`` (e.g. ``preview:proj-1``); return how many received it."""
        return self._core.publish(topic, event, payload, private=private)

    def listen(self, topic: str, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event, payload)`` for every broadcast on ``topic``, public or private, from
        clients or ``publish``; inline, in order, until the returned function is called. The
        orchestrator's event streams follow the agents' ``status`` and ``log`` this way."""
        return self._core.channels.taps.add(topic, listener)

    def stats(self) -> HubStats:
        return self._core.stats()

    def revoke(self, match: Callable[[Claims], bool], message: str) -> int:
        """End every joined channel whose claims ``match`` (say, the tokens of a preview that ended),
        as the server ends one whose token expires; return how many ended."""
        ended = 0
        for subscription in self._core.channels.every_subscription():
            if subscription.end is not None and match(subscription.claims):
                subscription.end(message)
                ended += 1
        return ended

    async def close(self) -> None:
        """Refuse new connections, close the open ones (code 1001) and wait for them to end."""
        self._closed = True
        for connection in list(self._live):
            connection.shut(GOING_AWAY, "server shutting down")
        tasks = list(self._live.values())
        if tasks:
            await asyncio.wait(tasks, timeout=self._core.limits.close_timeout * 2)

    async def _websocket(self, websocket: WebSocket) -> None:
        serializer = serializer_for(websocket.query_params.get("vsn"))
        if serializer is None:
            await _deny(websocket, 400, "Unsupported vsn: use 1.0.0 or 2.0.0")
            return
        # The header wins over the query parameter, as on the real server.
        token = websocket.headers.get("x-api-key") or websocket.query_params.get("apikey") or ""
        if not token:
            await _deny(websocket, 401, "API key is missing")
            return
        try:
            claims = await self._core.verifier(token)
        except Unauthorized as exc:
            await _deny(websocket, 401, exc.message)
            return
        except Exception:
            logger.exception("realtime: the token verifier failed")
            await _deny(websocket, 500, "Error connecting to Realtime")
            return
        if self._closed:
            await _deny(websocket, 503, "Realtime is shutting down")
            return
        key = self._client_key(websocket)
        limits = self._core.limits
        if self._core.connections >= limits.max_connections or self._per_client[key] >= (
            limits.max_connections_per_client
        ):
            logger.warning("realtime: refused a connection from %s: too many connected users", key)
            await _deny(websocket, 429, "Too many connected users")
            return

        # Counted before the first await, so that a burst of upgrades cannot pass the check together.
        self._core.connections += 1
        self._per_client[key] += 1
        try:
            await websocket.accept()
            client = f"{websocket.client.host}:{websocket.client.port}" if websocket.client else "?"
            who = f"{client} role={claims.get('role')}" + (f" sub={claims['sub']}" if "sub" in claims else "")
            connection = Connection(websocket, serializer, self._core, who=who)
            session = Session(self._core, connection, token=token, claims=claims)
            current = asyncio.current_task()
            assert current is not None
            self._live[connection] = current
            try:
                await connection.run(session.handle, session.close)
            finally:
                session.close()
                del self._live[connection]
        finally:
            self._core.connections -= 1
            self._per_client[key] -= 1
            if not self._per_client[key]:
                del self._per_client[key]


ClientKey = Callable[[WebSocket], str]


def _address(websocket: WebSocket) -> str:
    return websocket.client.host if websocket.client else "?"


async def _deny(websocket: WebSocket, status: int, error: str) -> None:
    response = JSONResponse({"error": error}, status_code=status)
    try:
        await websocket.send_denial_response(response)
    except RuntimeError:
        # A server without the denial-response extension: a close before accept is an HTTP 403.
        await websocket.close(1008, error)
