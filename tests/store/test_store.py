"""The store on both databases: migrations, the atomic quota, one live preview per project, history."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from tests.store.conftest import POSTGRES, postgres_store
from velocity.domain import (
    DatabaseUnavailable,
    Forbidden,
    NotFound,
    Preview,
    PreviewState,
    Project,
    QuotaExceeded,
)
from velocity.store import Store

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def preview(n: int, *, user: str = "alice", project: str | None = None) -> Preview:
    return Preview(
        id=f"p{n:011d}",
        user_id=user,
        project_id=project or f"project-{n}",
        state=PreviewState.PROVISIONING,
        created_at=NOW,
        updated_at=NOW,
        last_activity_at=NOW,
        expires_at=NOW + timedelta(hours=1),
    )


async def test_migrations_run_twice_without_harm(store: Store) -> None:
    """Starting again on an existing database changes nothing."""
    await store.migrate()
    assert await store.list_previews() == []


async def test_fifty_concurrent_creates_by_one_user_stop_at_the_limit(store: Store) -> None:
    """The count and the insert are one transaction under a per-user lock: never more than the limit."""
    results = await asyncio.gather(
        *(store.create_preview(preview(n), limit=3) for n in range(50)), return_exceptions=True
    )
    created = [r for r in results if not isinstance(r, BaseException)]
    assert len(created) == 3
    assert all(isinstance(r, QuotaExceeded) for r in results if isinstance(r, BaseException))
    assert len(await store.list_previews(user_id="alice")) == 3


async def test_concurrent_creates_for_one_project_yield_one_live_preview(store: Store) -> None:
    """Racing creates of the same project all get the same preview back."""
    results = await asyncio.gather(
        *(store.create_preview(preview(n, project="same"), limit=10) for n in range(10))
    )
    assert sum(r.created for r in results) == 1
    assert len({r.preview.id for r in results}) == 1


async def test_other_users_do_not_count_against_a_users_limit(store: Store) -> None:
    """Quotas are per user."""
    for n in range(3):
        await store.create_preview(preview(n, user="alice"), limit=3)
    outcome = await store.create_preview(preview(9, user="bob"), limit=3)
    assert outcome.created


async def test_a_state_change_is_conditional_and_recorded(store: Store) -> None:
    """update_preview applies only from the expected states, and history keeps every change."""
    await store.create_preview(preview(1), limit=3)
    booting = await store.update_preview(
        preview(1).id, expect={PreviewState.PROVISIONING}, state=PreviewState.BOOTING, machine_id="m1"
    )
    assert booting is not None
    assert booting.machine_id == "m1"
    assert (
        await store.update_preview(
            preview(1).id, expect={PreviewState.PROVISIONING}, state=PreviewState.READY
        )
        is None
    )
    states = [event.state for _, event in await store.events(preview(1).id)]
    assert states == [PreviewState.PROVISIONING, PreviewState.BOOTING]


async def test_activity_never_moves_backwards(store: Store) -> None:
    """touch keeps the latest activity time."""
    await store.create_preview(preview(1), limit=3)
    await store.touch(preview(1).id, NOW + timedelta(minutes=5))
    await store.touch(preview(1).id, NOW + timedelta(minutes=1))
    assert (await store.get_preview(preview(1).id)).last_activity_at == NOW + timedelta(minutes=5)


async def test_projects_are_saved_replaced_and_listed_by_owner(store: Store) -> None:
    """A project is saved with its snapshot, both replaced in place, listed for its owner only;
    unknown ids are NotFound, and another user's import of the id changes neither."""
    project = Project(
        id="app", owner_id="alice", name="App", file_count=2, size_bytes=10, created_at=NOW, updated_at=NOW
    )
    await store.save_project(project, snapshot=b"first", dependencies_key="k1")
    later = NOW + timedelta(minutes=1)
    replaced = await store.save_project(
        Project(
            id="app",
            owner_id="alice",
            name="App 2",
            file_count=3,
            size_bytes=12,
            created_at=later,
            updated_at=later,
        ),
        snapshot=b"second",
    )
    assert (replaced.name, replaced.created_at, replaced.updated_at) == ("App 2", NOW, later)
    assert (await store.snapshot("app"), await store.dependencies_key("app")) == (b"second", None)
    assert [p.id for p in await store.list_projects(owner_id="alice")] == ["app"]
    assert await store.list_projects(owner_id="bob") == []
    with pytest.raises(Forbidden):
        await store.save_project(replace(project, owner_id="bob"), snapshot=b"bob's")
    assert await store.snapshot("app") == b"second"
    with pytest.raises(NotFound):
        await store.get_project("nope")
    with pytest.raises(NotFound):
        await store.snapshot("nope")


async def test_connections_the_server_drops_mid_traffic_lose_nothing() -> None:
    """An administrator terminates every connection of the orchestrator's (``pg_terminate_backend``)
    three times while 200 creates and reads run: each runs again on a new connection, none fails,
    each is stored, and afterwards everything works without a restart."""
    async with postgres_store() as (store, database):

        async def create(n: int) -> str:
            made = await store.create_preview(preview(n, user=f"u{n % 20}"), limit=100)
            await store.list_previews(user_id=f"u{n % 20}")
            return made.preview.id

        admin = await asyncpg.connect(POSTGRES)
        try:
            traffic = asyncio.gather(*(create(n) for n in range(200)))
            dropped = 0
            for _ in range(3):
                await asyncio.sleep(0.05)  # let traffic reach the database between terminations
                dropped += await admin.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = $1 AND pid <> pg_backend_pid()",
                    database,
                )
            answers = await traffic
        finally:
            await admin.close()
        assert dropped >= 3, "connections were dropped mid-traffic"
        assert set(answers) == {p.id for p in await store.list_previews()}
        assert len(answers) == 200
        again = [await create(n) for n in range(200, 210)]
        assert set(again) <= {p.id for p in await store.list_previews()}


async def test_a_database_that_cannot_be_reached_is_unavailable_not_an_internal_error() -> None:
    """No server at the address: each operation raises ``DatabaseUnavailable`` (503, retry after)."""
    store = Store.from_url("postgresql+asyncpg://postgres@127.0.0.1:1/test")
    try:
        with pytest.raises(DatabaseUnavailable, match="the database is unavailable") as raised:
            await store.find_preview("p1")
        assert raised.value.status_code == 503
        assert raised.value.retry_after is not None
    finally:
        await store.dispose()
