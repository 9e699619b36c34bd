"""A Realtime hub for the agent's live sync on a loopback port that stays, and an editor on it.

The hub can go away (its sockets closed, new ones refused with 503) and come back as a new hub on
the same port, as an orchestrator that restarts would: the agent must rejoin on its own. The editor
is the official Python client on the private preview channel, announcing itself as the contract says.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from realtime import AsyncRealtimeClient, RealtimeSubscribeStates
from tests.realtime.realtime_clients import EventLog, eventually
from tests.realtime.tokens import anon_key, user_token, verify
from velocity.domain.errors import Forbidden
from velocity.realtime import Claims, RealtimeHub
from velocity.realtime.contract import preview_topic

PROJECT_ID = "proj-1"
PREVIEW_ID = "pv1"
# The agent's token: not the anon key, which may not open a preview channel here (see ``_authorize``).
AGENT_TOKEN = user_token(f"agent:{PREVIEW_ID}", project_id=PROJECT_ID)
TOPIC = preview_topic(PROJECT_ID)


async def _authorize(claims: Claims, topic: str, /) -> None:
    if claims.get("role") == "anon":
        raise Forbidden("the anon key alone opens no preview channel")


@dataclass
class LiveHub:
    server: uvicorn.Server
    port: int
    hub: RealtimeHub | None = None
    _editors: list[Editor] = field(default_factory=list)

    @property
    def supabase_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    async def start(cls) -> LiveHub:
        app = _Swappable()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, log_config=None, lifespan="off", ws_per_message_deflate=False
        )
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        await server.startup()
        live = cls(server, server.servers[0].sockets[0].getsockname()[1])
        app.owner = live
        live.come_back()
        return live

    def come_back(self) -> None:
        self.hub = RealtimeHub(verify, authorizer=_authorize)

    async def go_away(self) -> None:
        hub, self.hub = self.hub, None
        if hub is not None:
            await hub.close()

    async def editor(self, sub: str = "editor-1") -> Editor:
        editor = Editor(f"{self.supabase_url}/realtime/v1", user_token(sub))
        self._editors.append(editor)
        await editor.join(sub)
        return editor

    async def stop(self) -> None:
        for editor in self._editors:
            await editor.close()
        await self.go_away()
        for connection in list(self.server.server_state.connections):
            connection.shutdown()
        for listener in self.server.servers:
            listener.close()
        await eventually(lambda: not self.server.server_state.tasks)


class _Swappable:
    owner: LiveHub | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hub = self.owner.hub if self.owner is not None else None
        prefix = "/realtime/v1"
        if scope["type"] not in ("http", "websocket") or not scope["path"].startswith(prefix):
            return
        if hub is None:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1013})
            else:
                await JSONResponse({"error": "the hub is away"}, status_code=503)(scope, receive, send)
            return
        await hub.app({**scope, "root_path": scope.get("root_path", "") + prefix}, receive, send)


class Editor:
    """The editor's side: ``status`` and ``log`` from the agent land in ``log`` (an ``EventLog``)."""

    def __init__(self, url: str, token: str) -> None:
        self.client = AsyncRealtimeClient(url, anon_key(), auto_reconnect=False, max_retries=1)
        self.token = token
        self.log = EventLog("editor")
        self.channel: Any = None
        self._seq = 0

    async def join(self, sub: str) -> None:
        await self.client.set_auth(self.token)
        channel = self.client.channel(
            TOPIC,
            {
                "config": {
                    "broadcast": {"ack": True, "self": False},
                    "presence": {"key": f"editor:{sub}", "enabled": True},
                    "private": True,
                }
            },
        )
        for event in ("status", "log"):
            channel.on_broadcast(event, lambda m: self.log.add({"event": m["event"], **m["payload"]}))
        joined: list[RealtimeSubscribeStates] = []
        await channel.subscribe(lambda state, error: joined.append(state))
        assert joined == [RealtimeSubscribeStates.SUBSCRIBED], joined
        await channel.track({"role": "editor", "contract": 1})
        self.channel = channel

    async def send(self, event: str, payload: Mapping[str, Any]) -> None:
        self._seq += 1
        await self.channel.send_broadcast(event, {**payload, "seq": self._seq})

    async def status(self, state: str, within: float = 15) -> dict[str, Any]:
        return await self.log.expect(lambda e: e["event"] == "status" and e["state"] == state, within)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.remove_all_channels()
        await self.client.close()
        for channel in [self.channel] if self.channel is not None else []:
            for push in [channel.join_push, *channel.messages_waiting_for_ack.values()]:
                push.destroy()
            channel.rejoin_timer.reset()
