"""What a person sees: the preview URL in a real browser, hot-reloading an edit without a reload."""

from __future__ import annotations

import pytest

from tests.e2e.browser import chromium, open_app
from tests.e2e.harness import EXAMPLE, Live

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


async def test_the_preview_url_shows_the_app_and_hot_reloads_an_edit(live: Live) -> None:
    """Open the URL, click the counter, edit App.jsx: the heading changes, the count survives (HMR)."""
    await live.import_project(EXAMPLE, "example")
    preview = await live.create("example")
    ready = await live.settled(preview["id"])
    assert ready["state"] == "ready", ready["failure_reason"]
    async with chromium() as browser:
        page, loads = await open_app(browser, ready["access_url"])
        heading = page.locator("h1")
        await page.get_by_role("button").click()
        await page.get_by_role("button", name="Count is 1").wait_for()
        source = live.settings.data_dir / "sandboxes" / ready["machine_id"] / "workspace" / "src" / "App.jsx"
        source.write_text(source.read_text().replace("Hello from Velocity", "Edited in the sandbox"))
        await heading.filter(has_text="Edited in the sandbox").wait_for(timeout=15_000)
        assert await page.get_by_role("button").inner_text() == "Count is 1"
        assert loads == [1], "the edit arrived by hot reload, not by reloading the page"
        await page.screenshot(path=str(live.settings.data_dir / "preview.png"))
