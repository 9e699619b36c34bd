"""A page of one preview attacks another private preview of the same owner, in Chromium signed in to
both: all previews share one site (``*.PREVIEW_DOMAIN``), so SameSite alone lets the browser attach the
other preview's cookie. What the page tries must not reach the other preview's app; the same requests
from that preview's own page do."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from playwright.async_api import Page

from tests.e2e.browser import chromium
from tests.e2e.harness import PROJECTS, Live

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

INTRUDER = PROJECTS / "intruder"

# Run in a page: a form-encoded POST (no preflight), a no-cors GET, an <img>, and a websocket, each
# to ``target``, tagged so the target's app can tell which arrived.
ATTACKS = """async ([target, tag]) => {
  const settle = (p) => p.then(() => 'sent', (e) => String(e))
  const ws = new Promise((resolve) => {
    const socket = new WebSocket(target.replace('http', 'ws') + '/ws-' + tag)
    socket.onopen = () => resolve('open')
    socket.onerror = () => resolve('error')
    socket.onclose = () => resolve('closed')
  })
  const img = new Promise((resolve) => {
    const image = new Image()
    image.onload = image.onerror = () => resolve('done')
    image.src = target + '/img-' + tag
  })
  return {
    post: await settle(fetch(target + '/post-' + tag, {method: 'POST', mode: 'no-cors',
      credentials: 'include', headers: {'content-type': 'application/x-www-form-urlencoded'},
      body: 'a=1'})),
    get: await settle(fetch(target + '/get-' + tag, {mode: 'no-cors', credentials: 'include'})),
    img: await img,
    ws: await ws,
  }
}"""


async def signed_in_page(live: Live, context: Any, ready: dict[str, Any]) -> Page:
    page: Page = await context.new_page()
    await page.goto(ready["access_url"])
    await page.wait_for_url(f"http://{live.host(ready['id'])}/", timeout=15_000)
    return page


async def test_a_preview_page_cannot_use_another_preview_s_sign_in(live: Live) -> None:
    attacker, victim = await asyncio.gather(
        live.started(INTRUDER, "attacker-app"), live.started(INTRUDER, "victim-app")
    )
    victim_origin = f"http://{live.host(victim['id'])}"
    async with chromium() as browser:
        context = await browser.new_context()
        own = await signed_in_page(live, context, victim)
        evil = await signed_in_page(live, context, attacker)
        cookies = {c["name"]: c for c in await context.cookies()}
        assert cookies["__Host-velocity_preview"]["sameSite"] == "Strict"

        tried = await evil.evaluate(ATTACKS, [victim_origin, "evil"])
        assert tried["ws"] != "open", tried
        baseline = await own.evaluate(ATTACKS, [victim_origin, "own"])
        assert baseline["ws"] != "open"  # the test app refuses every websocket, but it hears them

    seen = (await live.ask(victim["id"], "/seen"))["seen"]
    assert not [line for line in seen if "-evil" in line], seen
    for request in ("POST /post-own", "GET /get-own", "GET /img-own", "UPGRADE /ws-own"):
        assert request in seen, f"the preview's own page could not {request}: {seen}"
