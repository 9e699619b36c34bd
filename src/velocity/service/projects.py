"""Importing projects and serving their snapshots."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

from velocity.auth import Caller
from velocity.clock import Clock
from velocity.domain import BadRequest, Forbidden, NotFound, Project
from velocity.projects import dependencies_key, legacy_snapshots, read_snapshot
from velocity.service.previews import require_owner_or_agent
from velocity.service.rows import RecentRows
from velocity.store import Store

log = logging.getLogger(__name__)

PROJECT_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def check_project_id(project_id: str) -> str:
    if not PROJECT_ID.match(project_id):
        raise BadRequest(
            f"invalid project id {project_id!r}: use 1-63 lowercase letters, digits and dashes, "
            "starting with a letter or digit"
        )
    return project_id


class ProjectService:
    def __init__(self, *, store: Store, clock: Clock, max_bytes: int, rows: RecentRows | None = None) -> None:
        self._store = store
        self._rows = rows
        self._clock = clock
        self._max_bytes = max_bytes

    async def import_archive(
        self, caller: Caller, project_id: str, *, name: str, archive: bytes, public: bool | None = None
    ) -> Project:
        """Register (or replace) a project from a tarball; only its owner may replace it."""
        if caller.is_agent:
            raise Forbidden("agents cannot import projects")
        check_project_id(project_id)
        try:
            existing = await self._store.get_project(project_id)
        except NotFound:
            existing = None
        if existing is not None and existing.owner_id != caller.subject:
            raise Forbidden(f"project {project_id} belongs to another user; choose another id")
        # In a thread: checking a large tarball takes a while, and the event loop serves everyone.
        snapshot = await asyncio.to_thread(read_snapshot, archive, max_bytes=self._max_bytes)
        key = await asyncio.to_thread(dependencies_key, snapshot.data)
        now = self._clock.now()
        # The store decides ownership and writes the snapshot in one transaction (another first
        # import may have won since the check above), so a refused import touches nothing.
        saved = await self._store.save_project(
            Project(
                id=project_id,
                owner_id=caller.subject,
                name=name or project_id,
                file_count=snapshot.file_count,
                size_bytes=snapshot.size_bytes,
                created_at=existing.created_at if existing else now,
                updated_at=now,
                public=public if public is not None else (existing.public if existing else False),
            ),
            snapshot=snapshot.data,
            dependencies_key=key,
        )
        if self._rows is not None:
            self._rows.forget_project(project_id)  # the router sees a change of ``public`` at once
        return saved

    async def adopt_legacy_snapshots(self, root: Path) -> int:
        """Move the snapshot files an earlier version kept under ``root`` into the database (once:
        each file goes when its snapshot is in); returns how many moved."""
        moved = 0
        for project_id, path in legacy_snapshots(root):
            try:
                project = await self._store.get_project(project_id)
            except NotFound:
                continue
            data = await asyncio.to_thread(path.read_bytes)
            key = await asyncio.to_thread(dependencies_key, data)
            await self._store.save_project(project, snapshot=data, dependencies_key=key)
            path.unlink()
            moved += 1
        if moved:
            log.info("moved %d project snapshots from %s into the database", moved, root)
        return moved

    async def list_projects(self, caller: Caller) -> list[Project]:
        return await self._store.list_projects(owner_id=caller.subject)

    async def snapshot(self, caller: Caller, project_id: str) -> bytes:
        check_project_id(project_id)
        project = await self._store.get_project(project_id)
        require_owner_or_agent(caller, owner_id=project.owner_id, project_id=project_id)
        return await self._store.snapshot(project_id)
