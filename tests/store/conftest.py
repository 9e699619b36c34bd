"""A store per test, on SQLite and on the PostgreSQL this machine runs (a throwaway database each)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest

from velocity.store import Store

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


@asynccontextmanager
async def postgres_store() -> AsyncIterator[tuple[Store, str]]:
    """A migrated store on a database of its own, and that database's name."""
    name = f"velocity_test_{secrets.token_hex(4)}"
    try:
        admin = await asyncpg.connect(POSTGRES)
    except OSError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {POSTGRES} ({exc}); start it (see README.md#tests)")
    await admin.execute(f'CREATE DATABASE "{name}"')
    made = Store.from_url(
        POSTGRES.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + f"/{name}"
    )
    try:
        await made.migrate()
        yield made, name
    finally:
        await made.dispose()
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        made = Store.from_url(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
        await made.migrate()
        yield made
        await made.dispose()
        return
    async with postgres_store() as (made, _name):
        yield made
