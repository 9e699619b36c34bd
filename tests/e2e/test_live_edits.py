"""Live edits end to end: a real sandbox's agent on the orchestrator's Realtime hub, followed as
Server-Sent Events, edited from supabase-js in front of a real browser, and pushed from the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.browser import chromium, open_app
from tests.e2e.harness import EXAMPLE, Live
from tests.realtime.realtime_clients import JS_DIR, JsClient, eventually
from velocity.projects import archive_files
from velocity.realtime.contract import preview_topic

pytestmark = pytest.mark.e2e
VELOCITY = str(Path(sys.executable).with_name("velocity"))


async def read_events(live: Live, preview_id: str, into: list[tuple[str, dict[str, Any]]]) -> None:
    """Follow GET /v1/previews/{id}/events until the server ends the stream."""
    async with (
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{live.port}", timeout=None) as client,
        client.stream("GET", f"/v1/previews/{preview_id}/events", headers=live.api.headers) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        kind = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                kind = line[len("event: ") :]
            elif line.startswith("data: "):
                into.append((kind, json.loads(line[len("data: ") :])))


async def test_the_event_stream_shows_the_state_changes_and_the_agents_status(live: Live) -> None:
    """From provisioning to stopped, with the agent's own status messages in between; then it ends."""
    await live.import_project(EXAMPLE, "example")
    preview = await live.create("example")
    events: list[tuple[str, dict[str, Any]]] = []
    reader = asyncio.create_task(read_events(live, preview["id"], events))
    ready = await live.settled(preview["id"])
    assert ready["state"] == "ready", ready["failure_reason"]
    await eventually(lambda: ("status", "ready") in [(k, e.get("state")) for k, e in events], within=30)
    assert (await live.api.delete(f"/v1/previews/{preview['id']}")).status_code == 200
    async with asyncio.timeout(30):
        await reader
    states = [event["state"] for kind, event in events if kind == "state"]
    assert states == ["provisioning", "booting", "ready", "stopping", "stopped"]
    statuses = [event for kind, event in events if kind == "status"]
    assert {status["preview_id"] for status in statuses} == {preview["id"]}
    assert statuses[-1]["state"] == "ready"


@pytest.fixture
def node() -> str:
    found = shutil.which("node")
    if found is None or not (JS_DIR / "node_modules" / "@supabase" / "realtime-js").is_dir():
        pytest.fail(
            "the JS client is not installed: run `npm ci --prefix tests/realtime/js` (part of `make setup`)"
        )
    return found


async def editor(live: Live, project_id: str) -> JsClient:
    """supabase-js's Realtime client, signed in as the project's owner, joined as an editor."""
    key = live.settings.supabase_anon_key
    assert key is not None
    js = await JsClient.start(f"ws://127.0.0.1:{live.port}/realtime/v1", key.get_secret_value())
    await js.command("setAuth", token=live.token)
    topic = preview_topic(project_id)
    config = {
        "private": True,
        "broadcast": {"ack": True, "self": False},
        "presence": {"key": "editor:e2e-user"},
    }
    assert await js.command("subscribe", topic=topic, config=config) == "SUBSCRIBED"
    await js.command("track", topic=topic, meta={"role": "editor", "contract": 1})
    return js


@pytest.mark.browser
async def test_an_edit_broadcast_from_supabase_js_updates_the_page_without_a_reload(
    live: Live, node: str
) -> None:
    """The owner's supabase-js client sends file_changed; the agent writes it; Vite hot-reloads the page,
    and after a quick burst of edits the page shows the last one."""
    await live.import_project(EXAMPLE, "example")
    preview = await live.create("example")
    ready = await live.settled(preview["id"])
    assert ready["state"] == "ready", ready["failure_reason"]
    js = await editor(live, "example")
    try:
        status = await js.log.expect(
            lambda e: e.get("type") == "broadcast" and e["event"] == "status", within=30
        )
        assert status["payload"]["state"] == "ready"
        async with chromium() as browser:
            page, loads = await open_app(browser, ready["access_url"])
            heading = page.locator("h1")
            await page.get_by_role("button").click()
            source = (
                (EXAMPLE / "src" / "App.jsx")
                .read_text()
                .replace("Hello from Velocity", "Sent from the editor")
            )
            payload = {"path": "src/App.jsx", "content": source, "encoding": "utf8"}
            assert (
                await js.command(
                    "send", topic=preview_topic("example"), event="file_changed", payload=payload
                )
                == "ok"
            )
            await heading.filter(has_text="Sent from the editor").wait_for(timeout=15_000)
            assert await page.get_by_role("button").inner_text() == "Count is 1"
            # Typing speed: one edit every few ms. Vite's watcher drops a change that follows another
            # within 50 ms; the agent spaces its writes so the last edit is the one on screen.
            for n in range(1, 6):
                payload["content"] = source.replace("Sent from the editor", f"Typed {n}")
                await js.command(
                    "send", topic=preview_topic("example"), event="file_changed", payload=payload
                )
            await heading.filter(has_text="Typed 5").wait_for(timeout=15_000)
            assert loads == [1], "the edits arrived by hot reload, not by reloading the page"
    finally:
        await js.close()


async def test_push_sends_a_directorys_changes_and_watch_keeps_sending(live: Live, tmp_path: Path) -> None:
    """`velocity push` saves and broadcasts what differs from the snapshot; with --watch a later edit
    reaches the sandbox's workspace too."""
    project = tmp_path / "example"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("node_modules", "dist"))
    await live.import_project(project, "example")
    preview = await live.create("example")
    ready = await live.settled(preview["id"])
    assert ready["state"] == "ready", ready["failure_reason"]
    workspace = live.settings.data_dir / "sandboxes" / ready["machine_id"] / "workspace"
    await eventually(lambda: (workspace / "src" / "App.jsx").exists(), within=10)
    (project / "src" / "Extra.jsx").write_text("export const extra = 1\n")
    env = {**os.environ, "VELOCITY_TOKEN": live.token, "COLUMNS": "400"}
    url = f"http://127.0.0.1:{live.port}"
    args = [VELOCITY, "push", str(project), "--preview", preview["id"], "--url", url, "--watch"]
    push = await asyncio.create_subprocess_exec(
        *args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert push.stdout is not None
    try:
        async with asyncio.timeout(30):
            first = (await push.stdout.readline()).decode()
            assert first.startswith("pushed 1 changed and 0 deleted: src/Extra.jsx"), first
            assert (await push.stdout.readline()).decode().startswith("watching ")
        await eventually(lambda: (workspace / "src" / "Extra.jsx").exists(), within=10)
        app = project / "src" / "App.jsx"
        app.write_text(app.read_text().replace("Hello from Velocity", "Pushed while watching"))
        await eventually(
            lambda: "Pushed while watching" in (workspace / "src" / "App.jsx").read_text(), within=15
        )
        page = await live.fetch(preview["id"], "/src/App.jsx")
        assert "Pushed while watching" in page.text
        snapshot = (await live.api.get("/v1/projects/example/snapshot")).content
        saved = dict(archive_files(snapshot, max_bytes=live.settings.max_project_bytes))
        assert b"Pushed while watching" in saved["src/App.jsx"], "the snapshot was saved first"
    finally:
        push.send_signal(signal.SIGINT)
        async with asyncio.timeout(15):
            await push.wait()
