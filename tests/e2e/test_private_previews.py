"""Private previews: a URL opens only with a signed link (turned into a host-only cookie) or the
owner's token; websockets are checked too; a public project needs neither."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.e2e.harness import EXAMPLE, PROJECTS, Live, live_orchestrator

pytestmark = pytest.mark.e2e

INTRUDER = PROJECTS / "intruder"


async def preview_of_example(live: Live, project_id: str = "example", **query: str) -> dict[str, str]:
    await live.import_project(EXAMPLE, project_id, **query)
    ready = await live.settled((await live.create(project_id))["id"])
    assert ready["state"] == "ready"
    return ready


async def get(live: Live, path: str, **headers: str) -> httpx.Response:
    """One request from a fresh client, as from a browser that holds only the cookies given."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{live.port}", timeout=30) as client:
        return await client.get(path, headers=headers)


async def sign_in(live: Live, ready: dict[str, str], host: str | None = None) -> httpx.Response:
    link = urlsplit(ready["access_url"])
    return await get(live, f"{link.path}?{link.query}", host=host or live.host(ready["id"]))


async def open_hmr_socket(live: Live, host: str, **headers: str) -> str:
    sock = socket.create_connection(("127.0.0.1", live.port))
    async with connect(
        f"ws://{host}/",
        sock=sock,
        subprotocols=["vite-hmr"],
        additional_headers=headers,
        open_timeout=10,  # type: ignore[list-item]
    ) as ws:
        return str(await asyncio.wait_for(ws.recv(), 10))


async def test_a_private_preview_opens_with_its_signed_link_and_not_without(npm_cache: Path) -> None:
    """No credentials: a 401 page. The signed link: a host-only, HttpOnly, SameSite=Strict ``__Host-``
    cookie on a page that moves on to the app by a navigation of its own (a redirect would still count
    as the editor's, and a Strict cookie would not be sent with it)."""
    async with live_orchestrator(npm_cache=npm_cache, preview_access="private") as live:
        ready = await preview_of_example(live)
        host = live.host(ready["id"])
        refused = await get(live, "/", host=host)
        assert refused.status_code == 401
        assert "this preview is private" in refused.text
        assert refused.headers["content-type"].startswith("text/html")
        signed_in = await sign_in(live, ready)
        assert signed_in.status_code == 200
        assert '<meta http-equiv="refresh" content="0;url=/">' in signed_in.text
        cookie = signed_in.headers["set-cookie"]
        assert cookie.startswith("__Host-velocity_preview=")
        assert {"HttpOnly", "SameSite=Strict", "Secure", "Path=/"} <= {a.strip() for a in cookie.split(";")}
        assert "Domain=" not in cookie, "scoped to this preview's host only"
        page = await get(live, "/src/App.jsx", host=host, cookie=cookie.split(";", 1)[0])
        assert page.status_code == 200
        assert "Hello from Velocity" in page.text


async def test_tokens_cannot_be_replayed_on_another_preview(npm_cache: Path) -> None:
    """A link or cookie of preview A opens nothing on preview B; another user's token neither."""
    async with live_orchestrator(npm_cache=npm_cache, preview_access="private") as live:
        first = await preview_of_example(live, "first")
        second = await preview_of_example(live, "second")
        replayed = await sign_in(live, first, host=live.host(second["id"]))
        assert replayed.status_code == 401
        session = (await sign_in(live, first)).headers["set-cookie"].split(";", 1)[0]
        assert (await get(live, "/", host=live.host(second["id"]), cookie=session)).status_code == 401
        stranger = live.running.runtime.issuer.mint_user("mallory")
        refused = await get(live, "/", host=live.host(first["id"]), authorization=f"Bearer {stranger}")
        assert refused.status_code == 401
        owner = await get(
            live, "/src/App.jsx", host=live.host(first["id"]), authorization=f"Bearer {live.token}"
        )
        assert owner.status_code == 200


async def test_websockets_to_a_private_preview_need_the_cookie(npm_cache: Path) -> None:
    """The HMR websocket is refused without a session and opens with one."""
    async with live_orchestrator(npm_cache=npm_cache, preview_access="private") as live:
        ready = await preview_of_example(live)
        host = live.host(ready["id"])
        with pytest.raises(InvalidStatus):
            await open_hmr_socket(live, host)
        session = (await sign_in(live, ready)).headers["set-cookie"].split(";", 1)[0]
        assert '"connected"' in await open_hmr_socket(live, host, cookie=session)


async def test_a_public_project_needs_no_sign_in(npm_cache: Path) -> None:
    """Made public, a project's previews open for anyone."""
    async with live_orchestrator(npm_cache=npm_cache, preview_access="private") as live:
        ready = await preview_of_example(live, public="true")
        page = await get(live, "/src/App.jsx", host=live.host(ready["id"]))
        assert page.status_code == 200


async def test_our_credentials_never_reach_the_preview_s_code(npm_cache: Path) -> None:
    """The owner's token is removed on every path: on a public preview, beside a valid session cookie,
    and when it opened the preview; our cookie never passes; the app's own token and cookies do."""
    async with live_orchestrator(npm_cache=npm_cache, preview_access="private") as live:
        private = await live.started(INTRUDER, "private-app")
        public = await live.started(INTRUDER, "public-app")
        await live.import_project(INTRUDER, "public-app", public="true")
        session = (await sign_in(live, private)).headers["set-cookie"].split(";", 1)[0]
        owner = f"Bearer {live.token}"

        async def seen_by_app(ready: dict[str, str], **headers: str) -> dict[str, str]:
            response = await get(live, "/headers", host=live.host(ready["id"]), **headers)
            assert response.status_code == 200, response.text
            answer: dict[str, str] = response.json()
            return answer

        for ready, headers in [
            (public, {"authorization": owner}),
            (private, {"authorization": owner}),
            (private, {"authorization": owner, "cookie": f"{session}; theme=dark"}),
        ]:
            seen = await seen_by_app(ready, **headers)
            assert "authorization" not in seen, headers
            assert "velocity_preview" not in seen.get("cookie", "")
        kept = await seen_by_app(private, authorization="Bearer app-token", cookie=f"theme=dark; {session}")
        assert (kept["authorization"], kept["cookie"]) == ("Bearer app-token", "theme=dark")


async def test_a_tossed_parent_domain_cookie_locks_nobody_out(npm_cache: Path) -> None:
    """A preview can set a cookie of our name for the parent domain; the browser then sends it beside
    ours, first or last. The valid one still opens the preview; the tossed one reaches nobody."""
    async with live_orchestrator(npm_cache=npm_cache, preview_access="private") as live:
        ready = await live.started(INTRUDER, "private-app")
        session = (await sign_in(live, ready)).headers["set-cookie"].split(";", 1)[0]
        tossed = "velocity_preview=tossed; __Host-velocity_preview=tossed"
        for cookie in (f"{tossed}; {session}", f"{session}; {tossed}"):
            response = await get(live, "/headers", host=live.host(ready["id"]), cookie=cookie)
            assert response.status_code == 200, response.text
            assert "cookie" not in response.json()


async def test_the_agent_s_own_endpoints_are_not_on_the_preview_url(npm_cache: Path) -> None:
    """On a public preview anyone may open the app, but not the machine's logs or health: those are
    the orchestrator's, and the owner reads the logs through the API."""
    async with live_orchestrator(npm_cache=npm_cache, preview_access="private") as live:
        await live.import_project(INTRUDER, "public-app", public="true")
        ready = await live.settled((await live.create("public-app"))["id"])
        host = live.host(ready["id"])
        for path in ("/__velocity/logs?tail=10", "/health", "/%5F%5Fvelocity/logs", "/__velocity/x"):
            for headers in ({}, {"authorization": f"Bearer {live.token}"}):
                refused = await get(live, path, host=host, **headers)
                assert refused.status_code == 404, (path, refused.text)
                assert "GET /v1/previews/" in refused.text
        assert (await get(live, "/headers", host=host)).status_code == 200
        logs = await live.api.get(f"/v1/previews/{ready['id']}/logs")
        assert logs.status_code == 200 and logs.json()["lines"]
