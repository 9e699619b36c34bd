"""The frameworks app builders generate, each previewed in a real sandbox at CONTAINER_MEMORY_MB=512
and seen in headless Chromium through the router: the page, then an edit of its source arriving
without anyone reloading (hot reload, or Astro's and Node's own reload on change).

The fixtures (tests/e2e/projects/frameworks) are the official starters as their tools made them
(``npm create vite`` react-ts, with Tailwind 4 added as its docs say; ``create-next-app`` with the app
router; ``sv create`` minimal; ``create-vue``), with the first page cut down to one heading (and
Next.js's layout without its Google fonts, which the egress does not reach). Astro's
starter is fetched from GitHub, which this machine cannot reach, so its project is the minimal
starter's three files written out, on Astro 5 (6 needs Node.js 22).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Page
from playwright.async_api import TimeoutError as PlaywrightTimeout

from tests.e2e.browser import chromium
from tests.e2e.harness import PROJECTS, Live, live_orchestrator

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

FRAMEWORKS = PROJECTS / "frameworks"
CASES = {  # fixture: (the file holding the heading, its text)
    "react-ts-tailwind": ("src/App.tsx", "Hello from React TS"),
    "nextjs": ("app/page.tsx", "Hello from Next.js"),
    "sveltekit": ("src/routes/+page.svelte", "Hello from SvelteKit"),
    "astro": ("src/pages/index.astro", "Hello from Astro"),
    "vue": ("src/App.vue", "Hello from Vue"),
    "node-watch": ("server.js", "Hello from Node.js"),
}
MEMORY_MB = 512


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def booting(npm_cache: Path) -> AsyncIterator[tuple[Live, dict[str, str]]]:
    """One orchestrator with every framework's preview created at once: their installs (mostly
    waiting on the registry) overlap. Each test then looks at its own once all have settled, so
    that no browser competes with five dev servers still compiling."""
    async with live_orchestrator(
        npm_cache=npm_cache, container_memory_mb=MEMORY_MB, max_containers_per_user=len(CASES)
    ) as live:
        ids = {}
        for fixture in CASES:
            await live.import_project(FRAMEWORKS / fixture, fixture)
            ids[fixture] = (await live.create(fixture))["id"]
        await asyncio.gather(*(live.settled(preview_id, timeout=300) for preview_id in ids.values()))
        yield live, ids


@pytest.mark.parametrize("fixture", list(CASES))
async def test_each_framework_serves_its_page_and_shows_an_edit(
    booting: tuple[Live, dict[str, str]], fixture: str
) -> None:
    live, ids = booting
    source, heading = CASES[fixture]
    ready = await live.settled(ids[fixture], timeout=300)
    if ready["state"] != "ready":
        logs = (await live.api.get(f"/v1/previews/{ids[fixture]}/logs")).json()["lines"]
        lines = "\n".join(line["line"] for line in logs[-40:])
        raise AssertionError(f"{ready['failure_reason']}\n{lines}")
    async with chromium() as browser:
        page = await browser.new_page()
        console: list[str] = []
        page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
        page.on("requestfailed", lambda request: console.append(f"request failed: {request.url}"))
        page.on(
            "response",
            lambda response: (
                console.append(f"{response.status} {response.url}") if response.status >= 400 else None
            ),
        )
        await page.goto(ready["access_url"])
        await page.locator("h1").filter(has_text=heading).wait_for(timeout=180_000)
        # The heading may be server-rendered: the app hydrates, and then takes updates, once its
        # scripts have loaded.
        await page.wait_for_load_state("networkidle")
        workspace = live.settings.data_dir / "sandboxes" / ready["machine_id"] / "workspace"
        edited = heading.replace("Hello from", "Edited in")
        path = workspace / source
        path.write_text(path.read_text().replace(heading, edited))
        if fixture == "node-watch":  # no client of its own: the server restarts, a reload shows it
            await reload_until(page, edited)
        else:
            try:
                await page.locator("h1").filter(has_text=edited).wait_for(timeout=90_000)
            except PlaywrightTimeout:
                logs = (await live.api.get(f"/v1/previews/{ids[fixture]}/logs")).json()["lines"]
                raise AssertionError(
                    f"the edit never showed; the page said {console}, the preview "
                    + "\n".join(line["line"] for line in logs[-30:])
                ) from None
    current = (await live.api.get(f"/v1/previews/{ids[fixture]}")).json()
    assert current["state"] == "ready", current


async def reload_until(page: Page, text: str) -> None:
    """Reload until the page shows ``text`` (nothing tells a page that its server restarted; while
    it restarts a reload gets the router's 502)."""
    for _ in range(100):
        response = await page.reload()
        if response is not None and response.ok and text in await page.content():
            return
        await page.wait_for_timeout(200)
    raise AssertionError(f"{text!r} never appeared")
