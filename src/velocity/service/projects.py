"""Importing projects and serving their snapshots."""

from __future__ import annotations

import asyncio
import re

from velocity.auth import Caller
from velocity.clock import Clock
from velocity.domain import BadRequest, Forbidden, NotFound, Project
from velocity.projects import ProjectFiles, read_snapshot
from velocity.service.previews import require_owner_or_agent
from velocity.store import Store

PROJECT_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def check_project_id(project_id: str) -> str:
    if not PROJECT_ID.match(project_id):
        raise BadRequest(
            f"invalid project id {project_id!r}: use 1-63 lowercase letters, digits and dashes, "
            "starting with a letter or digit"
        )
    return project_id


class ProjectService:
    def __init__(self, *, store: Store, files: ProjectFiles, clock: Clock, max_bytes: int) -> None:
        self._store = store
        self._files = files
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
        now = self._clock.now()
        # The store decides ownership in one transaction (another first import may have won since
        # the check above); only then is the snapshot written, so a refused import touches nothing.
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
            )
        )
        self._files.save(project_id, snapshot.data)
        return saved

    async def list_projects(self, caller: Caller) -> list[Project]:
        return await self._store.list_projects(owner_id=caller.subject)

    async def snapshot(self, caller: Caller, project_id: str) -> bytes:
        check_project_id(project_id)
        project = await self._store.get_project(project_id)
        require_owner_or_agent(caller, owner_id=project.owner_id, project_id=project_id)
        return self._files.read(project_id)
