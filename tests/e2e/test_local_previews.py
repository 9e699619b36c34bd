"""Previews for real: bubblewrap sandboxes, cgroups, the agent, Vite, the router and its websockets."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.e2e.harness import EXAMPLE, PROJECTS, Live, live_orchestrator
from velocity.providers.local import cgroups

pytestmark = pytest.mark.e2e


def workspace(live: Live, machine_id: str) -> Path:
    return live.settings.data_dir / "sandboxes" / machine_id / "workspace"


async def test_the_example_is_served_through_the_router(live: Live) -> None:
    """Create through the API; the preview URL serves the app and its heading."""
    await live.import_project(EXAMPLE, "example")
    preview = await live.create("example")
    ready = await live.settled(preview["id"])
    assert ready["state"] == "ready", ready["failure_reason"]
    page = await live.fetch(preview["id"], "/")
    assert page.status_code == 200
    assert '<div id="root"></div>' in page.text
    app = await live.fetch(preview["id"], "/src/App.jsx")
    assert "Hello from Velocity" in app.text
    logs = (await live.api.get(f"/v1/previews/{preview['id']}/logs")).json()
    assert any("VITE" in line["line"] or "ready in" in line["line"] for line in logs["lines"])


async def test_an_edit_in_the_workspace_arrives_over_the_proxied_hmr_websocket(live: Live) -> None:
    """Vite's HMR websocket works through the router: a file change becomes an update message."""
    await live.import_project(EXAMPLE, "example")
    preview = await live.create("example")
    ready = await live.settled(preview["id"])
    client = (await live.fetch(preview["id"], "/@vite/client")).text
    token = re.search(r'const wsToken = "([^"]*)"', client)
    query = f"?token={token.group(1)}" if token else ""
    async with live.websocket(preview["id"], f"/{query}", subprotocol="vite-hmr") as ws:
        connected = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert connected["type"] == "connected"
        await live.fetch(preview["id"], "/src/App.jsx")  # Vite watches modules a client has loaded
        source = workspace(live, ready["machine_id"]) / "src" / "App.jsx"
        source.write_text(source.read_text().replace("Hello from Velocity", "Edited live"))
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 15))
            if message["type"] == "update":
                break
    assert any(u["path"] == "/src/App.jsx" for u in message["updates"])
    assert "Edited live" in (await live.fetch(preview["id"], "/src/App.jsx")).text


async def test_deleting_a_preview_leaves_no_process_cgroup_or_files(live: Live) -> None:
    """After delete the sandbox's processes, cgroups and directory are gone and the URL says so."""
    await live.import_project(EXAMPLE, "example")
    preview = await live.create("example")
    ready = await live.settled(preview["id"])
    machine_id = ready["machine_id"]
    version = cgroups.detect_version()
    group = cgroups.attach(machine_id, version=version) if version else None
    assert group is None or group.pids(), "a running sandbox has processes in its cgroup"
    deleted = await live.api.delete(f"/v1/previews/{preview['id']}")
    assert deleted.json()["state"] == "stopped"
    assert not (live.settings.data_dir / "sandboxes" / machine_id).exists()
    if group is not None:
        assert all(not d.exists() for d in group.dirs.values())
    gone = await live.fetch(preview["id"], "/")
    assert gone.status_code == 410


async def test_a_process_over_the_memory_limit_is_killed_and_the_preview_fails(npm_cache: Path) -> None:
    """A dev server allocating past CONTAINER_MEMORY_MB is OOM-killed; the preview fails saying so."""
    async with live_orchestrator(npm_cache=npm_cache, container_memory_mb=128) as live:
        await live.import_project(PROJECTS / "hog", "hog")
        preview = await live.create("hog")
        assert (await live.settled(preview["id"]))["state"] == "ready"
        assert "allocating" in (await live.fetch(preview["id"], "/hog")).text
        failed = await live.ended(preview["id"])
    assert failed["state"] == "failed"
    assert "out of memory" in failed["failure_reason"]
    assert "the machine has 128 MB: set CONTAINER_MEMORY_MB to 256 or more" in failed["failure_reason"]


async def test_a_dev_server_that_listens_elsewhere_fails_the_preview_saying_where(live: Live) -> None:
    """A dev server that ignores PORT and HOST is not waited for until the timeout: the preview
    fails, naming the address it listens on and what to change."""
    await live.import_project(PROJECTS / "elsewhere", "elsewhere")
    preview = await live.create("elsewhere")
    failed = await live.settled(preview["id"], timeout=60)
    assert failed["state"] == "failed"
    reason = failed["failure_reason"]
    assert "the dev server listens on 127.0.0.1:3999, not on 127.0.0.1:5173" in reason, reason
    assert "make the dev script use them" in reason


async def test_a_fork_bomb_is_capped_by_the_pids_limit(npm_cache: Path) -> None:
    """A fork bomb stops at LOCAL_SANDBOX_PIDS_MAX; the orchestrator keeps answering."""
    async with live_orchestrator(npm_cache=npm_cache, local_sandbox_pids_max=64) as live:
        await live.import_project(PROJECTS / "hog", "hog")
        preview = await live.create("hog")
        ready = await live.settled(preview["id"])
        version = cgroups.detect_version()
        if version is None:
            pytest.fail("cgroups are not writable on this host: the pids limit cannot be shown")
        group = cgroups.attach(ready["machine_id"], version=version)
        assert "forking" in (await live.fetch(preview["id"], "/bomb")).text
        deadline = asyncio.get_running_loop().time() + 20
        # The kernel counts refused forks; nothing signals it, so read the counter until it moves.
        while group.pids_limit_hits() == 0 and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        assert group.pids_limit_hits() > 0
        assert len(group.pids()) <= 64
        assert (await live.api.get("/healthz")).status_code == 200
        await live.api.delete(f"/v1/previews/{preview['id']}")
        assert all(not d.exists() for d in group.dirs.values())


async def test_a_dev_server_that_keeps_crashing_fails_the_preview_with_its_output(live: Live) -> None:
    """The agent gives up on a dev server that exits at once; the preview keeps its last lines."""
    await live.import_project(PROJECTS / "crash", "crash")
    preview = await live.create("crash")
    failed = await live.settled(preview["id"])
    assert failed["state"] == "failed"
    assert any("boom: missing config" in line for line in failed["failure_logs"])


async def test_a_restarted_orchestrator_adopts_the_running_sandboxes(npm_cache: Path) -> None:
    """Previews survive an orchestrator restart: the next one finds the sandbox and routes to it."""
    data = Path(tempfile.mkdtemp(prefix="vp-"))
    try:
        async with live_orchestrator(npm_cache=npm_cache, data=data, keep_previews=True) as first:
            await first.import_project(EXAMPLE, "example")
            preview = await first.create("example")
            machine_id = (await first.settled(preview["id"]))["machine_id"]
        assert (data / "sandboxes" / machine_id).exists()
        async with live_orchestrator(npm_cache=npm_cache, data=data) as second:
            # The maintenance pass at start adopts it (or this one does, if it runs first).
            await second.running.runtime.previews.reconcile()
            assert (await second.api.get(f"/v1/previews/{preview['id']}")).json()["state"] == "ready"
            page = await second.fetch(preview["id"], "/src/App.jsx")
            assert "Hello from Velocity" in page.text
            machine = await second.running.runtime.provider.get(machine_id)
            assert machine.state.value == "started"
        assert not (data / "sandboxes" / machine_id).exists()
    finally:
        shutil.rmtree(data, ignore_errors=True)


async def test_a_users_next_preview_starts_from_the_dependencies_their_last_one_installed(live: Live) -> None:
    """node_modules are kept per owner and lockfile (the session's first build left the example's): the
    owner's next preview installs nothing, and another user's installs its own."""
    await live.import_project(EXAMPLE, "example")
    mine = await live.settled((await live.create("example"))["id"])
    assert mine["state"] == "ready"
    assert not await _installed(live, mine["id"]), "started from the owner's kept node_modules"
    react = workspace(live, mine["machine_id"]) / "node_modules" / "react" / "package.json"
    other_token = live.running.runtime.issuer.mint_user("someone-else")
    other = {"Authorization": f"Bearer {other_token}"}
    await live.api.put(
        "/v1/projects/theirs",
        content=(await live.api.get("/v1/projects/example/snapshot")).content,
        headers={**other, "content-type": "application/gzip"},
    )
    created = (await live.api.post("/v1/previews", json={"project_id": "theirs"}, headers=other)).json()
    theirs = await live.running.runtime.previews.settled(created["id"], timeout=90)
    assert theirs.state.value == "ready"
    assert await _installed(live, created["id"], headers=other), "another user never gets the owner's"
    their_react = workspace(live, theirs.machine_id or "") / "node_modules" / "react" / "package.json"
    assert (their_react.stat().st_dev, their_react.stat().st_ino) != (
        react.stat().st_dev,
        react.stat().st_ino,
    )


async def _installed(live: Live, preview_id: str, headers: dict[str, str] | None = None) -> bool:
    """Whether the preview's agent ran the package manager (its output is the ``install`` stream)."""
    logs = (await live.api.get(f"/v1/previews/{preview_id}/logs", headers=headers)).json()
    return any(line["stream"] == "install" for line in logs["lines"])
