"""The store: previews (with an atomic per-user quota), their events, and projects."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple, TypeVar, cast

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from velocity.domain import (
    LIVE_STATES,
    Conflict,
    DatabaseUnavailable,
    Forbidden,
    NotFound,
    PooledMachine,
    PoolState,
    Preview,
    PreviewEvent,
    PreviewState,
    Project,
    QuotaExceeded,
    WebhookDelivery,
)
from velocity.store.tables import (
    instances,
    leases,
    pool_machines,
    preview_events,
    previews,
    projects,
    snapshots,
    used_links,
    webhook_deliveries,
)

MIGRATIONS = Path(__file__).with_name("migrations")

Operation = TypeVar("Operation", bound=Callable[..., Awaitable[Any]])
# An operation whose connection the server dropped runs again on a new one, this many times: a
# database that is down fails the new connection at once, so retries cost nothing then.
DROPPED_CONNECTION_RETRIES = 3


def _whole(operation: Operation) -> Operation:
    """Run a database operation to its end (commit or rollback) even when its caller is cancelled,
    with the database's failures mapped once (``_unreachable``).

    Cancelled half-way, a transaction would leave its connection to be torn down while it may hold
    SQLite's write lock; shielded, the caller stops waiting and the operation still finishes cleanly
    (``Store.dispose`` waits for it). A connection the server dropped (a restart, an administrator's
    ``pg_terminate_backend``) is discarded by the pool and the operation runs once more on a new one.
    """

    async def attempt(store: Store, *args: Any, **kwargs: Any) -> Any:
        try:
            for _ in range(DROPPED_CONNECTION_RETRIES):
                try:
                    return await operation(store, *args, **kwargs)
                except sa_exc.DBAPIError as exc:
                    if not exc.connection_invalidated:
                        raise
                # The pool has discarded the dropped connection: again, on a new one.
            return await operation(store, *args, **kwargs)
        except sa_exc.DBAPIError as exc:
            if _unreachable(exc):
                raise _unavailable(exc) from exc
            raise
        except (sa_exc.TimeoutError, OSError) as exc:
            raise _unavailable(exc) from exc

    @functools.wraps(operation)
    async def whole(store: Store, *args: Any, **kwargs: Any) -> Any:
        task = asyncio.ensure_future(attempt(store, *args, **kwargs))
        store._inflight.add(task)
        task.add_done_callback(store._inflight.discard)
        return await asyncio.shield(task)

    return cast(Operation, whole)


def _unreachable(exc: sa_exc.DBAPIError) -> bool:
    """A database that cannot answer now (down, restarting, its connections dropped, SQLite busy),
    as opposed to a statement that is wrong."""
    return exc.connection_invalidated or isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError)


def _unavailable(exc: BaseException) -> DatabaseUnavailable:
    cause = exc.orig if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None else exc
    text = " ".join(str(cause).split())[:200] or type(cause).__name__
    return DatabaseUnavailable(f"the database is unavailable ({type(cause).__name__}: {text}); retry shortly")


class CreateOutcome(NamedTuple):
    preview: Preview
    created: bool  # False: the user's live preview of that project was returned instead


class Store:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._inflight: set[asyncio.Future[Any]] = set()
        self._sqlite = engine.dialect.name == "sqlite"

    @classmethod
    def from_url(cls, url: str) -> Store:
        if url.startswith("sqlite"):
            engine = create_async_engine(url, connect_args={"timeout": 30})
            _serialise_sqlite_writers(engine)
        else:
            # No ping before each use (a round trip per transaction): ``_whole`` replaces a dropped
            # connection and runs the operation again.
            engine = create_async_engine(url, pool_size=10, max_overflow=10)
        return cls(engine)

    async def migrate(self) -> None:
        """Bring the schema to the newest migration (idempotent)."""

        def upgrade(connection: Connection) -> None:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

        async with self._writing() as conn:
            await conn.run_sync(upgrade)
        self._restrict_database_file()

    def _restrict_database_file(self) -> None:
        """A SQLite database holds every user's previews and tokens' subjects: owner-only, like a
        server's data directory."""
        url = self._engine.url
        if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
            return
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.chmod(url.database + suffix, 0o600)

    async def dispose(self) -> None:
        if self._inflight:  # operations whose callers were cancelled still finish first
            await asyncio.wait(list(self._inflight))
        await self._engine.dispose()

    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[AsyncConnection]:
        """A transaction that writes (on SQLite it holds the write lock from its first statement)."""
        async with self._engine.connect() as conn:
            conn = await conn.execution_options(write=True)
            async with conn.begin():
                yield conn

    # --- previews --------------------------------------------------------------------------------
    @_whole
    async def create_preview(self, preview: Preview, *, limit: int) -> CreateOutcome:
        """Insert ``preview`` unless the user already has a live one for the project or is at ``limit``.

        The count and the insert happen in one transaction holding a per-user lock (an advisory lock on
        PostgreSQL, the database write lock on SQLite), so concurrent creates never exceed the limit,
        even from several orchestrator replicas.
        """
        try:
            async with self._writing() as conn:
                await self._lock_user(conn, preview.user_id)
                live = await self._live_of_user(conn, preview.user_id)
                for row in live:
                    if row.project_id == preview.project_id:
                        return CreateOutcome(row, created=False)
                if len(live) >= limit:
                    raise QuotaExceeded(
                        f"user {preview.user_id} already has {len(live)} live previews "
                        f"(MAX_CONTAINERS_PER_USER={limit}); delete one first",
                        limit=limit,
                    )
                await conn.execute(previews.insert().values(**_preview_row(preview)))
                await self._add_event(conn, preview.id, preview.state, "created", preview.created_at)
        except IntegrityError:
            # Another writer won the race for this (user, project): return its preview.
            for row in await self.list_previews(user_id=preview.user_id, states=LIVE_STATES):
                if row.project_id == preview.project_id:
                    return CreateOutcome(row, created=False)
            raise
        return CreateOutcome(preview, created=True)

    async def _lock_user(self, conn: AsyncConnection, user_id: str) -> None:
        if conn.dialect.name == "postgresql":
            await conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:u))"), {"u": user_id})

    async def _live_of_user(self, conn: AsyncConnection, user_id: str) -> list[Preview]:
        query = previews.select().where(
            previews.c.user_id == user_id, previews.c.state.in_([s.value for s in LIVE_STATES])
        )
        return [_preview(row) for row in (await conn.execute(query)).mappings()]

    @_whole
    async def find_preview(self, preview_id: str) -> Preview | None:
        async with self._engine.connect() as conn:
            row = (
                (await conn.execute(previews.select().where(previews.c.id == preview_id))).mappings().first()
            )
        return _preview(row) if row else None

    @_whole
    async def get_preview(self, preview_id: str) -> Preview:
        found = await self.find_preview(preview_id)
        if found is None:
            raise NotFound(f"preview {preview_id} not found")
        return found

    @_whole
    async def list_previews(
        self, *, user_id: str | None = None, states: Collection[PreviewState] | None = None
    ) -> list[Preview]:
        query = previews.select().order_by(previews.c.created_at)
        if user_id is not None:
            query = query.where(previews.c.user_id == user_id)
        if states is not None:
            query = query.where(previews.c.state.in_([s.value for s in states]))
        async with self._engine.connect() as conn:
            return [_preview(row) for row in (await conn.execute(query)).mappings()]

    @_whole
    async def count_previews(self) -> dict[PreviewState, int]:
        """How many previews are in each state (states with none are absent)."""
        query = sa.select(previews.c.state, sa.func.count()).group_by(previews.c.state)
        async with self._engine.connect() as conn:
            return {PreviewState(state): count for state, count in await conn.execute(query)}

    @_whole
    async def update_preview(
        self,
        preview_id: str,
        *,
        expect: Collection[PreviewState] | None = None,
        detail: str | None = None,
        **changes: Any,
    ) -> Preview | None:
        """Apply ``changes`` if the preview is in one of ``expect``; ``None`` when it was not.

        A change of ``state`` is recorded in the preview's events with ``detail``.
        """
        values = {k: (v.value if isinstance(v, PreviewState) else v) for k, v in changes.items()}
        if "failure_logs" in values:
            values["failure_logs"] = list(values["failure_logs"])
        query = previews.update().where(previews.c.id == preview_id).values(**values)
        if expect is not None:
            query = query.where(previews.c.state.in_([s.value for s in expect]))
        async with self._writing() as conn:
            if (await conn.execute(query)).rowcount == 0:
                return None
            if "state" in changes:
                at = changes.get("updated_at") or datetime.now(UTC)
                await self._add_event(conn, preview_id, PreviewState(values["state"]), detail, at)
            row = (await conn.execute(previews.select().where(previews.c.id == preview_id))).mappings().one()
        return _preview(row)

    @_whole
    async def add_event(self, preview_id: str, state: PreviewState, detail: str, at: datetime) -> None:
        async with self._writing() as conn:
            await self._add_event(conn, preview_id, state, detail, at)

    async def _add_event(
        self, conn: AsyncConnection, preview_id: str, state: PreviewState, detail: str | None, at: datetime
    ) -> None:
        await conn.execute(
            preview_events.insert().values(preview_id=preview_id, state=state.value, detail=detail, at=at)
        )

    @_whole
    async def events(self, preview_id: str, *, after_id: int = 0) -> list[tuple[int, PreviewEvent]]:
        query = (
            preview_events.select()
            .where(preview_events.c.preview_id == preview_id, preview_events.c.id > after_id)
            .order_by(preview_events.c.id)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [
            (
                row["id"],
                PreviewEvent(
                    preview_id=row["preview_id"],
                    at=_utc(row["at"]),
                    state=PreviewState(row["state"]),
                    detail=row["detail"],
                ),
            )
            for row in rows
        ]

    @_whole
    async def touch(self, preview_id: str, at: datetime) -> None:
        """Record activity; never moves ``last_activity_at`` backwards."""
        query = (
            previews.update()
            .where(previews.c.id == preview_id, previews.c.last_activity_at < at)
            .values(last_activity_at=at)
        )
        async with self._writing() as conn:
            await conn.execute(query)

    # --- replicas ------------------------------------------------------------------------------
    @_whole
    async def beat(self, instance: str, now: datetime) -> None:
        """Record that the replica ``instance`` is alive at ``now``."""
        async with self._writing() as conn:
            query = instances.update().where(instances.c.id == instance).values(seen_at=now)
            if (await conn.execute(query)).rowcount == 0:
                await conn.execute(instances.insert().values(id=instance, started_at=now, seen_at=now))

    @_whole
    async def live_instances(self, *, since: datetime) -> set[str]:
        """The replicas that beat at ``since`` or later."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(sa.select(instances.c.id).where(instances.c.seen_at >= since))
            return {row[0] for row in rows}

    @_whole
    async def forget_instance(self, instance: str) -> None:
        """A replica that stops cleanly leaves at once, its previews' work to the leader."""
        async with self._writing() as conn:
            await conn.execute(instances.delete().where(instances.c.id == instance))
            await conn.execute(leases.delete().where(leases.c.holder == instance))

    @_whole
    async def hold_lease(self, name: str, holder: str, *, now: datetime, ttl: timedelta) -> bool:
        """Take or renew the lease ``name`` for ``holder`` until ``now + ttl``; False while another
        replica holds it unexpired. One statement decides, so two replicas never both win."""
        renew = (
            leases.update()
            .where(leases.c.name == name, sa.or_(leases.c.holder == holder, leases.c.expires_at < now))
            .values(holder=holder, expires_at=now + ttl)
        )
        async with self._writing() as conn:
            if (await conn.execute(renew)).rowcount:
                return True
            held = await conn.execute(sa.select(leases.c.name).where(leases.c.name == name))
            if held.first() is not None:
                return False
        try:
            async with self._writing() as conn:
                await conn.execute(leases.insert().values(name=name, holder=holder, expires_at=now + ttl))
        except IntegrityError:
            return False  # another replica inserted it first
        return True

    # --- warm pool ---------------------------------------------------------------------------------
    @_whole
    async def add_pooled(self, entry: PooledMachine) -> None:
        async with self._writing() as conn:
            await conn.execute(pool_machines.insert().values(_pooled_row(entry)))

    @_whole
    async def update_pooled(self, key: str, *, expect: PoolState, **changes: Any) -> bool:
        """Change the pool entry ``key`` if it is still in state ``expect``; False otherwise (claimed,
        or removed by the reconciler)."""
        values = {k: v.value if isinstance(v, PoolState) else v for k, v in changes.items()}
        query = (
            pool_machines.update()
            .where(pool_machines.c.key == key, pool_machines.c.state == expect.value)
            .values(**values)
        )
        async with self._writing() as conn:
            return bool((await conn.execute(query)).rowcount)

    @_whole
    async def remove_pooled(self, key: str) -> bool:
        async with self._writing() as conn:
            deleted = await conn.execute(pool_machines.delete().where(pool_machines.c.key == key))
            return bool(deleted.rowcount)

    @_whole
    async def list_pooled(self) -> list[PooledMachine]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(sa.select(pool_machines).order_by(pool_machines.c.created_at))
            return [_pooled(row) for row in rows.mappings()]

    @_whole
    async def claim_pooled(
        self, preview_id: str, *, now: datetime, regions: Collection[str | None] = ()
    ) -> PooledMachine | None:
        """Take a ready pool machine for ``preview_id``, preferring ``regions`` in their order, then
        the oldest: one statement moves it from ready to claimed, so of two replicas claiming it at
        once exactly one gets it."""
        ranked = list(regions)
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                sa.select(pool_machines)
                .where(pool_machines.c.state == PoolState.READY.value)
                .order_by(pool_machines.c.created_at)
                .limit(64)
            )
            candidates = [_pooled(row) for row in rows.mappings()]
        candidates.sort(key=lambda e: ranked.index(e.region) if e.region in ranked else len(ranked))
        for entry in candidates:
            claim = (
                pool_machines.update()
                .where(pool_machines.c.key == entry.key, pool_machines.c.state == PoolState.READY.value)
                .values(state=PoolState.CLAIMED.value, preview_id=preview_id, updated_at=now)
            )
            async with self._writing() as conn:
                if (await conn.execute(claim)).rowcount:
                    return replace(entry, state=PoolState.CLAIMED, preview_id=preview_id, updated_at=now)
        return None

    # --- signed links -----------------------------------------------------------------------------
    @_whole
    async def use_link(self, jti: str, *, expires_at: datetime, now: datetime) -> bool:
        """Record that the link ``jti`` has been used; False when it already was. Expired records go."""
        try:
            async with self._writing() as conn:
                await conn.execute(used_links.delete().where(used_links.c.expires_at < now))
                await conn.execute(used_links.insert().values(jti=jti, expires_at=expires_at))
        except IntegrityError:
            return False
        return True

    # --- projects --------------------------------------------------------------------------------
    @_whole
    async def save_project(
        self, project: Project, *, snapshot: bytes, dependencies_key: str | None = None
    ) -> Project:
        """Create the project with its snapshot, or replace both for its owner; ``Forbidden`` when
        another user owns the id. One transaction decides, so of two first imports of an id exactly
        one creates it, and a refused import leaves the snapshot as it was."""
        values = {
            "id": project.id,
            "owner_id": project.owner_id,
            "name": project.name,
            "file_count": project.file_count,
            "size_bytes": project.size_bytes,
            "created_at": project.created_at,
            "updated_at": project.updated_at,
            "public": project.public,
        }
        for _ in range(2):  # a concurrent insert of the same id wins once; then this one updates
            try:
                async with self._writing() as conn:
                    query = projects.select().where(projects.c.id == project.id)
                    existing = (await conn.execute(query)).mappings().first()
                    if existing is None:
                        await conn.execute(projects.insert().values(**values))
                    elif existing["owner_id"] != project.owner_id:
                        raise Forbidden(f"project {project.id} belongs to another user; choose another id")
                    else:
                        changes = {k: v for k, v in values.items() if k not in ("created_at", "owner_id")}
                        await conn.execute(
                            projects.update().where(projects.c.id == project.id).values(**changes)
                        )
                    await conn.execute(snapshots.delete().where(snapshots.c.project_id == project.id))
                    await conn.execute(
                        snapshots.insert().values(
                            project_id=project.id, data=snapshot, dependencies_key=dependencies_key
                        )
                    )
                return await self.get_project(project.id)
            except IntegrityError:
                continue
        raise Conflict(f"project {project.id} is being imported by someone else; try again")

    @_whole
    async def get_project(self, project_id: str) -> Project:
        async with self._engine.connect() as conn:
            row = (
                (await conn.execute(projects.select().where(projects.c.id == project_id))).mappings().first()
            )
        if row is None:
            raise NotFound(f"project {project_id} not found; import it first (velocity projects import DIR)")
        return _project(row)

    @_whole
    async def snapshot(self, project_id: str) -> bytes:
        async with self._engine.connect() as conn:
            query = sa.select(snapshots.c.data).where(snapshots.c.project_id == project_id)
            data = (await conn.execute(query)).scalar()
        if data is None:
            raise NotFound(f"project {project_id} has no snapshot; import it again")
        return bytes(data)

    @_whole
    async def dependencies_key(self, project_id: str) -> str | None:
        """The digest of the project's package.json and lockfile (``None``: no lockfile)."""
        async with self._engine.connect() as conn:
            query = sa.select(snapshots.c.dependencies_key).where(snapshots.c.project_id == project_id)
            key: str | None = (await conn.execute(query)).scalar()
        return key

    @_whole
    async def list_projects(self, *, owner_id: str | None = None) -> list[Project]:
        query = projects.select().order_by(projects.c.created_at)
        if owner_id is not None:
            query = query.where(projects.c.owner_id == owner_id)
        async with self._engine.connect() as conn:
            return [_project(row) for row in (await conn.execute(query)).mappings()]

    # --- webhooks (velocity.loops.webhooks) -------------------------------------------------------
    @_whole
    async def last_event_id(self) -> int:
        async with self._engine.connect() as conn:
            found = (await conn.execute(sa.select(sa.func.max(preview_events.c.id)))).scalar()
        return int(found or 0)

    @_whole
    async def events_after(self, after_id: int, *, limit: int = 500) -> list[tuple[int, PreviewEvent]]:
        """Every preview's events past ``after_id``, oldest first (the operators' dashboard)."""
        query = (
            preview_events.select()
            .where(preview_events.c.id > after_id)
            .order_by(preview_events.c.id)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [
            (
                row["id"],
                PreviewEvent(row["preview_id"], _utc(row["at"]), PreviewState(row["state"]), row["detail"]),
            )
            for row in rows
        ]

    @_whole
    async def first_delivered_event_id(self) -> int | None:
        """The oldest event any delivery attempt was made for (None: webhooks never sent one)."""
        async with self._engine.connect() as conn:
            found = (await conn.execute(sa.select(sa.func.min(webhook_deliveries.c.event_id)))).scalar()
        return None if found is None else int(found)

    @_whole
    async def undelivered_events(
        self, *, after_id: int, since: datetime, states: Collection[PreviewState], limit: int = 100
    ) -> list[tuple[int, PreviewEvent]]:
        """Events past ``after_id`` and ``since`` in ``states`` with no final delivery attempt, oldest
        first (an event whose transaction committed late is still found: no cursor skips it)."""
        finished = sa.select(webhook_deliveries.c.event_id).where(webhook_deliveries.c.final)
        query = (
            preview_events.select()
            .where(
                preview_events.c.id > after_id,
                preview_events.c.at >= since,
                preview_events.c.state.in_([state.value for state in states]),
                preview_events.c.id.not_in(finished),
            )
            .order_by(preview_events.c.id)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [
            (
                row["id"],
                PreviewEvent(row["preview_id"], _utc(row["at"]), PreviewState(row["state"]), row["detail"]),
            )
            for row in rows
        ]

    @_whole
    async def record_delivery(self, delivery: WebhookDelivery) -> None:
        async with self._writing() as conn:
            await conn.execute(
                webhook_deliveries.insert().values(
                    event_id=delivery.event_id,
                    preview_id=delivery.preview_id,
                    kind=delivery.kind,
                    attempt=delivery.attempt,
                    status_code=delivery.status_code,
                    error=delivery.error,
                    at=delivery.at,
                    delivered=delivery.delivered,
                    final=delivery.final,
                )
            )

    @_whole
    async def deliveries(self, *, limit: int = 100) -> list[WebhookDelivery]:
        """The latest attempts, newest first."""
        query = webhook_deliveries.select().order_by(webhook_deliveries.c.id.desc()).limit(limit)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [
            WebhookDelivery(
                event_id=row["event_id"],
                preview_id=row["preview_id"],
                kind=row["kind"],
                attempt=row["attempt"],
                at=_utc(row["at"]),
                delivered=row["delivered"],
                final=row["final"],
                status_code=row["status_code"],
                error=row["error"],
            )
            for row in rows
        ]


def _serialise_sqlite_writers(engine: AsyncEngine) -> None:
    """Make SQLite write transactions take the write lock at BEGIN (SQLAlchemy's documented recipe).

    Without it the quota check (a read) and the insert (a write) of two concurrent creates could
    interleave; with ``BEGIN IMMEDIATE`` the second waits for the first to commit.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Connection) -> None:
        # Reads (WAL) never wait for a writer; only transactions that write take the lock at BEGIN.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything we store is UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _preview_row(preview: Preview) -> dict[str, Any]:
    return {
        "id": preview.id,
        "user_id": preview.user_id,
        "project_id": preview.project_id,
        "state": preview.state.value,
        "machine_id": preview.machine_id,
        "created_at": preview.created_at,
        "updated_at": preview.updated_at,
        "last_activity_at": preview.last_activity_at,
        "expires_at": preview.expires_at,
        "ready_at": preview.ready_at,
        "failure_reason": preview.failure_reason,
        "failure_logs": list(preview.failure_logs),
        "owner": preview.owner,
    }


def _preview(row: RowMapping) -> Preview:
    return Preview(
        id=row["id"],
        user_id=row["user_id"],
        project_id=row["project_id"],
        state=PreviewState(row["state"]),
        machine_id=row["machine_id"],
        created_at=_utc(row["created_at"]),
        updated_at=_utc(row["updated_at"]),
        last_activity_at=_utc(row["last_activity_at"]),
        expires_at=_utc(row["expires_at"]),
        ready_at=_utc(row["ready_at"]) if row["ready_at"] else None,
        failure_reason=row["failure_reason"],
        failure_logs=tuple(row["failure_logs"] or ()),
        owner=row["owner"],
    )


def _pooled_row(entry: PooledMachine) -> dict[str, Any]:
    return {
        "key": entry.key,
        "state": entry.state.value,
        "machine_id": entry.machine_id,
        "region": entry.region,
        "preview_id": entry.preview_id,
        "instance": entry.instance,
        "created_at": entry.created_at,
        "updated_at": entry.updated_at,
    }


def _pooled(row: RowMapping) -> PooledMachine:
    return PooledMachine(
        key=row["key"],
        state=PoolState(row["state"]),
        machine_id=row["machine_id"],
        region=row["region"],
        preview_id=row["preview_id"],
        instance=row["instance"],
        created_at=_utc(row["created_at"]),
        updated_at=_utc(row["updated_at"]),
    )


def _project(row: RowMapping) -> Project:
    return Project(
        id=row["id"],
        owner_id=row["owner_id"],
        name=row["name"],
        file_count=row["file_count"],
        size_bytes=row["size_bytes"],
        created_at=_utc(row["created_at"]),
        updated_at=_utc(row["updated_at"]),
        public=bool(row["public"]),
    )
