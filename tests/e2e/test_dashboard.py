"""The operators' dashboard at /admin in headless Chromium, against an orchestrator with a real
sandbox: the page lists a preview the test creates, turns it ready when the preview is (the admin
event stream), filters, shows its history, and destroying its machine from the page (confirmed in
the dialog) removes the machine."""

from __future__ import annotations

import pytest

from tests.e2e.browser import chromium
from tests.e2e.harness import EXAMPLE, Live

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


async def test_the_dashboard_follows_a_preview_and_destroys_its_machine(live: Live) -> None:
    operator = live.running.runtime.issuer.mint_user("ops", operator=True)
    await live.import_project(EXAMPLE, "dashboard")
    async with chromium() as browser:
        page = await browser.new_page()
        dialogs: list[str] = []

        async def accept(dialog: object) -> None:
            dialogs.append(dialog.message)  # type: ignore[attr-defined]
            await dialog.accept()  # type: ignore[attr-defined]

        page.on("dialog", accept)
        await page.goto(f"http://127.0.0.1:{live.port}/admin#token={operator}")
        await page.locator("#status").filter(has_text="live").wait_for(timeout=15_000)
        assert "token=" not in page.url, "the token leaves the address bar"

        preview = await live.create("dashboard")  # after the page: it must come by the event stream
        row = page.locator(f"tr[data-preview-id='{preview['id']}']")
        await row.wait_for(timeout=15_000)
        assert "e2e-user" in await row.inner_text() and "dashboard" in await row.inner_text()
        await page.locator(f"tr[data-preview-id='{preview['id']}'][data-state='ready']").wait_for(
            timeout=60_000
        )
        ready = await live.settled(preview["id"])
        assert ready["machine_id"] in await row.inner_text()

        await page.select_option("#filter", "failed")
        await row.wait_for(state="detached", timeout=5_000)
        await page.select_option("#filter", "live")
        await row.click()
        await page.locator("#details-events").filter(has_text="ready").wait_for(timeout=10_000)

        await row.get_by_role("button", name="destroy").click()
        await page.locator(f"tr[data-preview-id='{preview['id']}'] button", has_text="destroy").wait_for(
            state="detached", timeout=15_000
        )
    assert dialogs == [f"Destroy machine {ready['machine_id']} of {preview['id']} now?"]
    machines = await live.running.runtime.previews.machines()
    assert ready["machine_id"] not in {m.id for m in machines}
