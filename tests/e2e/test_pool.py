"""The warm pool with real sandboxes: a pooled machine boots the template (Vite running, no user's
code), a create claims it, the project's files replace the template's under the running dev server,
and the preview serves the project; the machine is destroyed with the preview, never pooled again."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.e2e.harness import EXAMPLE, Live, live_orchestrator
from velocity.domain import PoolState
from velocity.providers.base import META_POOL, META_PREVIEW_ID

pytestmark = [pytest.mark.e2e]

MARKER = "claimed from the warm pool"


@pytest_asyncio.fixture
async def pooled_live(npm_cache: Path) -> AsyncIterator[Live]:
    async with live_orchestrator(npm_cache=npm_cache, warm_pool_size=1) as live:
        yield live


async def pool_ready(live: Live, timeout: float = 180) -> str:
    """The pooled machine's id, once its template is served."""
    store = live.running.runtime.store
    async with asyncio.timeout(timeout):
        while True:
            entries = await store.list_pooled()
            if entries and entries[0].state is PoolState.READY and entries[0].machine_id:
                return entries[0].machine_id
            await asyncio.sleep(0.1)


async def test_a_create_claims_the_pooled_machine_and_serves_the_project(
    pooled_live: Live, tmp_path: Path
) -> None:
    live = pooled_live
    project = tmp_path / "project"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("node_modules", "dist"))
    app = project / "src" / "App.jsx"
    app.write_text(app.read_text().replace("</h1>", f" ({MARKER})</h1>", 1))
    await live.import_project(project, "pooled")
    machine_id = await pool_ready(live)
    provider = live.running.runtime.provider

    began = time.monotonic()
    preview = await live.create("pooled")
    ready = await live.settled(preview["id"])
    took = time.monotonic() - began
    assert ready["state"] == "ready", ready
    assert ready["machine_id"] == machine_id
    module = await live.fetch(preview["id"], "/src/App.jsx")
    assert module.status_code == 200, (module.text, "\n".join(await provider.logs(machine_id, tail=40)))
    assert MARKER in module.text  # the project's file, served by the template's dev server
    page = await live.fetch(preview["id"], "/")
    assert '<div id="root">' in page.text
    machine = await provider.get(machine_id)
    assert machine.metadata[META_PREVIEW_ID] == preview["id"] and META_POOL in machine.metadata
    events = [e.detail or "" for _, e in await live.running.runtime.store.events(preview["id"])]
    assert f"pooled machine {machine_id} claimed (dev server running)" in events
    print(f"create to ready through a claim: {took * 1000:.0f} ms")

    # The pool boots another for the next user; this machine ends with its preview.
    assert await pool_ready(live) != machine_id
    await live.api.delete(f"/v1/previews/{preview['id']}")
    await live.ended(preview["id"])
    assert all(m.id != machine_id for m in await provider.list())
