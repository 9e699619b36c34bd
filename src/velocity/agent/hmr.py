"""Whether the dev server's hot reload works: the agent connects to it as a browser's client does.

A dev server can answer pages while its hot-reload channel is refused (``server.hmr: false``, a
plugin that broke it, a websocket the server closes): an editor then silently stops updating. After
the dev server is ready, and every ``CHECK_SECONDS`` while it runs, the agent opens the channel:

* Vite (and what runs on it: SvelteKit, Vue, Astro, Remix...): ``/@vite/client`` names the token;
  a websocket with the ``vite-hmr`` subprotocol must say ``{"type": "connected"}``;
* Next.js: ``/_next/webpack-hmr`` must send a first message;
* anything else: ``unknown`` (no channel the agent knows).

The result is ``dev_server.hmr`` in ``/health`` (``ok``, ``broken`` with why, or ``unknown``). These
connections go straight to the dev server's port, not through the agent's proxy: they are not the
preview's activity.
"""

from __future__ import annotations

import asyncio
import json
import re

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus, WebSocketException
from websockets.typing import Subprotocol

CHECK_SECONDS = 30.0
ANSWER_SECONDS = 5.0
_TOKEN = re.compile(rb'const wsToken = "([^"]*)"')
VITE_CLIENT_MARK = b"[vite]"  # in Vite's client's own messages ("[vite] connecting...")


async def check(port: int, *, next_js: bool) -> tuple[str, str | None]:
    """``("ok", None)``, ``("broken", why)`` or ``("unknown", why)``."""
    if next_js:
        return await _first_message(f"ws://127.0.0.1:{port}/_next/webpack-hmr", None, "Next.js")
    try:
        async with httpx.AsyncClient(timeout=ANSWER_SECONDS, trust_env=False) as client:
            answer = await client.get(f"http://127.0.0.1:{port}/@vite/client")
    except httpx.HTTPError as exc:
        return "unknown", f"the dev server did not answer /@vite/client: {type(exc).__name__}"
    if answer.status_code != 200 or VITE_CLIENT_MARK not in answer.content:
        return "unknown", "no hot-reload channel the agent knows (not Vite or Next.js)"
    token = _TOKEN.search(answer.content)
    query = f"?token={token.group(1).decode()}" if token else ""
    return await _first_message(
        f"ws://127.0.0.1:{port}/{query}", Subprotocol("vite-hmr"), "Vite", "connected"
    )


async def _first_message(
    url: str, subprotocol: Subprotocol | None, name: str, wanted: str | None = None
) -> tuple[str, str | None]:
    try:
        async with asyncio.timeout(ANSWER_SECONDS):
            async with connect(
                url,
                subprotocols=[subprotocol] if subprotocol else None,
                open_timeout=ANSWER_SECONDS,
                proxy=None,
            ) as channel:
                first = await channel.recv()
    except TimeoutError:
        return "broken", f"{name}'s hot-reload websocket said nothing within {ANSWER_SECONDS:.0f} s"
    except InvalidStatus as exc:
        return "broken", f"{name}'s hot-reload websocket was refused: HTTP {exc.response.status_code}"
    except (OSError, WebSocketException) as exc:
        return "broken", f"{name}'s hot-reload websocket failed: {type(exc).__name__}: {exc}"
    if wanted is not None:
        try:
            kind = json.loads(first).get("type")
        except (ValueError, AttributeError):
            kind = None
        if kind != wanted:
            return "broken", f"{name}'s hot-reload websocket sent {str(first)[:80]!r}, not {wanted!r}"
    return "ok", None
