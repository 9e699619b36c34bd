"""What the router reads on every request, read from the store at most once a second per preview.

A Vite page loads hundreds of modules, each a request through the router, and each needs the
preview's row (is it ready, whose is it) and its project's public flag. ``RecentRows`` keeps a
copy for ``ttl`` seconds: a change this process makes drops the copy at once (the service calls
``forget``); one another replica makes is seen within ``ttl``. "No such preview" is never kept,
so a preview made elsewhere is found at its first request.
"""

from __future__ import annotations

import time

from velocity.domain import NotFound, Preview
from velocity.store import Store

ROW_TTL_SECONDS = 1.0
PRUNE_AT = 10_000  # copies kept before the expired ones are dropped


class RecentRows:
    def __init__(self, store: Store, *, ttl: float = ROW_TTL_SECONDS) -> None:
        self._store = store
        self._ttl = ttl
        self._previews: dict[str, tuple[float, Preview]] = {}
        self._public: dict[str, tuple[float, bool]] = {}

    async def preview(self, preview_id: str) -> Preview | None:
        now = time.monotonic()
        kept = self._previews.get(preview_id)
        if kept is not None and kept[0] > now:
            return kept[1]
        preview = await self._store.find_preview(preview_id)
        if preview is None:
            self._previews.pop(preview_id, None)
        else:
            if len(self._previews) >= PRUNE_AT:  # copies of previews nobody asks for any more
                self._previews = {k: v for k, v in self._previews.items() if v[0] > now}
            self._previews[preview_id] = (now + self._ttl, preview)
        return preview

    async def public(self, project_id: str) -> bool:
        now = time.monotonic()
        kept = self._public.get(project_id)
        if kept is not None and kept[0] > now:
            return kept[1]
        try:
            public = (await self._store.get_project(project_id)).public
        except NotFound:
            public = False
        if len(self._public) >= PRUNE_AT:
            self._public = {k: v for k, v in self._public.items() if v[0] > now}
        self._public[project_id] = (now + self._ttl, public)
        return public

    def forget(self, preview_id: str) -> None:
        self._previews.pop(preview_id, None)

    def forget_project(self, project_id: str) -> None:
        self._public.pop(project_id, None)
