"""The service on an in-memory provider, a fake clock, a SQLite store and agents played by a mock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.service.world import ALICE, BOB, Agents, World
from velocity.auth import TokenIssuer
from velocity.clock import FakeClock
from velocity.projects import pack_directory
from velocity.providers.fake import FakeProvider
from velocity.service import AgentClient, PreviewService, ProjectService
from velocity.settings import Settings
from velocity.store import Store


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    settings = Settings(
        velocity_data_dir=tmp_path,
        max_containers_per_user=3,
        supabase_url="http://127.0.0.1:8000",
        _env_file=None,  # type: ignore[call-arg]
    )
    clock = FakeClock()
    store = Store.from_url(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    await store.migrate()
    provider = FakeProvider(clock)
    agents = Agents()
    issuer = TokenIssuer("s" * 40, issuer="http://127.0.0.1:8000/auth/v1")
    service = PreviewService(
        store=store,
        provider=provider,
        agents=AgentClient(httpx.MockTransport(agents.handle)),
        issuer=issuer,
        settings=settings,
        clock=clock,
    )
    projects = ProjectService(store=store, clock=clock, max_bytes=1 << 20)
    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text('{"name": "app"}')
    for owner in (ALICE, BOB):
        for name in ("one", "two", "three", "four"):
            await projects.import_archive(
                owner,
                f"{owner.subject}-{name}",
                name=name,
                archive=pack_directory(app, max_bytes=1 << 20).data,
            )
    yield World(service, projects, provider, clock, agents, store, settings)
    await service.close()
    await store.dispose()
