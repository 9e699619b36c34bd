"""Suspend on idle, resume on request, with a real sandbox: the cgroup freezer stops every process
of an idle preview where it is, and the next request through the router thaws it; the page a
browser kept open carries on, hot reload included."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.e2e.browser import chromium, open_app
from tests.e2e.harness import EXAMPLE, Live, live_orchestrator
from velocity.domain import PreviewState
from velocity.providers.local import cgroups

pytestmark = [pytest.mark.e2e]

IDLE_MINUTES = 0.1  # 6 s without a request or a frame
CLEANUP_MINUTES = 0.01  # a reaper pass every 0.6 s


@pytest_asyncio.fixture
async def idle_live(npm_cache: Path) -> AsyncIterator[Live]:
    async with live_orchestrator(
        npm_cache=npm_cache,
        preview_idle_timeout_minutes=IDLE_MINUTES,
        container_cleanup_interval_minutes=CLEANUP_MINUTES,
    ) as live:
        yield live


async def suspended(live: Live, preview_id: str) -> None:
    previews = live.running.runtime.previews
    preview = await previews.wait_for(preview_id, lambda p: p.state == PreviewState.SUSPENDED, timeout=60)
    assert preview.state == PreviewState.SUSPENDED, preview


def freezer(machine_id: str) -> cgroups.Cgroup:
    version = cgroups.detect_version()
    assert version is not None, "cgroups are not writable here"
    return cgroups.attach(machine_id, version=version)


async def test_an_idle_preview_is_frozen_and_the_next_request_thaws_it(idle_live: Live) -> None:
    live = idle_live
    ready = await live.started(EXAMPLE, "example")
    group = freezer(ready["machine_id"])
    assert group.can_freeze, "no cgroup freezer on this host"
    await suspended(live, ready["id"])
    assert group.is_frozen()
    assert (await live.api.get(f"/v1/previews/{ready['id']}")).json()["state"] == "suspended"
    began = time.monotonic()
    response = await live.fetch(ready["id"], "/")
    took = time.monotonic() - began
    assert response.status_code == 200, response.text
    assert '<div id="root">' in response.text
    assert not group.is_frozen()
    after = (await live.api.get(f"/v1/previews/{ready['id']}")).json()
    assert after["state"] == "ready"
    print(f"resumed and served the page in {took * 1000:.0f} ms")
    details = [event.detail or "" for _, event in await live.running.runtime.store.events(ready["id"])]
    assert any(detail.startswith("suspended: idle for") for detail in details), details
    assert any(detail.startswith("resumed in ") for detail in details), details


@pytest.mark.browser
async def test_a_page_left_open_carries_on_after_a_resume(idle_live: Live) -> None:
    """The tab kept its state and its hot-reload socket through the suspension: after a reload
    request wakes the preview, an edit arrives by hot reload."""
    live = idle_live
    ready = await live.started(EXAMPLE, "example")
    async with chromium() as browser:
        page, loads = await open_app(browser, ready["access_url"])
        await page.get_by_role("button").click()
        await page.get_by_role("button", name="Count is 1").wait_for()
        await suspended(live, ready["id"])
        assert freezer(ready["machine_id"]).is_frozen()
        # Someone comes back: any request to the URL (here the app's own module) wakes it.
        status = await page.evaluate("fetch('/src/App.jsx').then(r => r.status)")
        assert status == 200
        source = live.settings.data_dir / "sandboxes" / ready["machine_id"] / "workspace" / "src" / "App.jsx"
        source.write_text(source.read_text().replace("Hello from Velocity", "Edited after a resume"))
        await page.locator("h1").filter(has_text="Edited after a resume").wait_for(timeout=15_000)
        assert await page.get_by_role("button").inner_text() == "Count is 1"
        assert loads == [1], "the edit arrived by hot reload, not by reloading the page"
