"""Headless Chromium from Debian, driven by Playwright (no browser download)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from playwright.async_api import Browser, Page, async_playwright

# Without the background-networking flags Chromium keeps dialling Google's hosts, which this
# machine's closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    executable = shutil.which("chromium")
    if executable is None:
        raise AssertionError("chromium is not installed: run `make setup` (apt-get install chromium)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def open_app(browser: Browser, access_url: str) -> tuple[Page, list[int]]:
    """Open a preview by its signed link and wait for the example's heading; the list holds one entry
    for the app's load and grows by one on every later load, so a test can tell a hot reload from a
    reload."""
    page = await browser.new_page()
    await page.goto(access_url)  # signs the browser in; its page then navigates to the app
    await page.locator("h1").filter(has_text="Hello from Velocity").wait_for(timeout=15_000)
    loads: list[int] = [1]
    page.on("load", lambda _: loads.append(1))
    return page, loads
