"""The whole orchestrator in-process: API and router over ASGI, an in-memory provider, mock agents."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from starlette.types import ASGIApp

from tests.service.world import Agents
from velocity.providers.fake import FakeProvider
from velocity.runtime import Runtime
from velocity.service import AgentClient
from velocity.settings import Settings


@dataclass
class Orchestrator:
    runtime: Runtime
    client: httpx.AsyncClient
    provider: FakeProvider
    agents: Agents

    def token(self, user: str = "alice") -> str:
        return self.runtime.issuer.mint_user(user)

    def auth(self, user: str = "alice") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user)}"}


@asynccontextmanager
async def in_process(settings: Settings) -> AsyncIterator[tuple[Orchestrator, ASGIApp]]:
    """An orchestrator on ``settings`` served over ASGI, with its JWKS fetched through the app itself."""
    provider = FakeProvider()
    agents = Agents()
    clients: list[httpx.AsyncClient] = []

    async def jwks_from_the_app() -> dict[str, object]:
        # The orchestrator's own JWKS endpoint, reached through the app as any verifier would.
        document: dict[str, object] = (await clients[0].get("/auth/v1/.well-known/jwks.json")).json()
        return document

    runtime = await Runtime.open(
        settings,
        provider=provider,
        agents=AgentClient(httpx.MockTransport(agents.handle)),
        jwks_fetch=jwks_from_the_app,
    )
    app = runtime.asgi()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000"
    ) as client:
        clients.append(client)
        yield Orchestrator(runtime, client, provider, agents), app
    await runtime.close(stop_previews=True)


@pytest.fixture
async def orchestrator(tmp_path: Path) -> AsyncIterator[Orchestrator]:
    settings = Settings(velocity_data_dir=tmp_path, max_request_body_bytes=4096, _env_file=None)  # type: ignore[call-arg]
    async with in_process(settings) as (made, _app):
        yield made
