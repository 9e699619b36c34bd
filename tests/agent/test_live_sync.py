"""Live file sync through a real hub into a real agent process: edits, refusals, reinstalls, rejoins."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.agent.harness import Agent, AgentFactory, SnapshotServer, project_files, tarball
from tests.agent.live_hub import AGENT_TOKEN, PREVIEW_ID, LiveHub
from tests.realtime.realtime_clients import eventually
from tests.realtime.tokens import anon_key
from velocity.realtime.contract import MAX_MESSAGE_BYTES


@dataclass
class Synced:
    agent: Agent
    hub: LiveHub
    snapshots: SnapshotServer

    @property
    def workspace(self) -> Path:
        return self.agent.workspace


@pytest.fixture
async def live_hub() -> AsyncIterator[LiveHub]:
    hub = await LiveHub.start()
    yield hub
    await hub.stop()


@pytest.fixture
async def synced(
    start_agent: AgentFactory, snapshots: SnapshotServer, live_hub: LiveHub
) -> AsyncIterator[Synced]:
    """A ready agent joined to the preview channel, its snapshot holding one extra file (notes.txt)."""
    snapshots.token = AGENT_TOKEN
    snapshots.body = tarball(project_files(**{"notes.txt": b"first notes\n"}))
    env = {
        "SUPABASE_URL": live_hub.supabase_url,
        "SUPABASE_ANON_KEY": anon_key(),
        "AGENT_TOKEN": AGENT_TOKEN,
        "PREVIEW_ID": PREVIEW_ID,
    }
    async with start_agent(**env) as agent:
        await agent.ready()
        await agent.wait_for_line(lambda line: "live sync: joined preview:proj-1" in line)
        yield Synced(agent, live_hub, snapshots)


async def test_a_burst_of_200_edits_is_applied_in_order_with_none_lost(synced: Synced) -> None:
    """200 file_changed sent back to back: every file arrives with its content, written in send order."""
    editor = await synced.hub.editor()
    await editor.status("ready")
    for i in range(200):
        await editor.send(
            "file_changed", {"path": f"src/burst/{i:03}.txt", "content": f"edit {i}\n", "encoding": "utf8"}
        )
    files = [synced.workspace / f"src/burst/{i:03}.txt" for i in range(200)]
    await eventually(lambda: all(file.exists() for file in files), within=20)
    assert [file.read_text() for file in files] == [f"edit {i}\n" for i in range(200)]
    written = [file.stat().st_mtime_ns for file in files]
    assert written == sorted(written), "files were written out of order"
    assert not [line for line in synced.agent.lines if "missed" in line or "refused" in line]
    assert not editor.log.matching(lambda e: e["event"] == "status" and e["state"] == "error")


async def test_path_attacks_are_refused_with_an_error_naming_the_path(synced: Synced, scratch: Path) -> None:
    """Absolute, '..', NUL, a symlink leading out, node_modules and oversize: each refused, each named,
    nothing written outside the workspace; the agent carries on with the next good edit."""
    outside = scratch / "outside"
    outside.mkdir()
    (synced.workspace / "escape").symlink_to(outside)
    attacks = [
        "/tmp/absolute.txt",
        "../outside/dot-dot.txt",
        "src/../../outside/dot-dot.txt",
        "src/nul\x00.txt",
        "escape/through-a-symlink.txt",
        "node_modules/react/index.js",
        "src/oversize.txt",
    ]
    editor = await synced.hub.editor()
    await editor.status("ready")
    for path in attacks:
        content = "x" * (MAX_MESSAGE_BYTES + 1) if "oversize" in path else "pwned"
        await editor.send("file_changed", {"path": path, "content": content, "encoding": "utf8"})
    batch = {
        "files": [
            {"path": "src/batch-good.txt", "content": "fine", "encoding": "utf8"},
            {"path": "escape/batch-bad.txt", "content": "pwned", "encoding": "utf8"},
        ],
        "deleted": [],
    }
    await editor.send("files_batch", batch)
    await editor.send(
        "file_changed", {"path": "src/after.txt", "content": "still working", "encoding": "utf8"}
    )
    for path in [*attacks, "escape/batch-bad.txt"]:
        error = await editor.log.expect(lambda e, p=path: e["event"] == "status" and e.get("path") == p)
        assert error["state"] == "error" and error["detail"].startswith("refused "), error
        assert error["preview_id"] == PREVIEW_ID
    await eventually(lambda: (synced.workspace / "src/after.txt").exists(), within=10)
    assert list(outside.iterdir()) == []
    assert not (synced.workspace / "src/batch-good.txt").exists(), "a refused batch writes nothing"
    assert not (synced.workspace / "node_modules").exists()
    assert not Path("/tmp/absolute.txt").exists()


async def test_after_a_dropped_connection_the_agent_rejoins_and_resyncs_from_the_snapshot(
    synced: Synced,
) -> None:
    """The hub goes away; the project changes meanwhile (an edit, a deletion); the hub comes back: the
    agent rejoins by itself and catches up from the snapshot, then takes live edits again."""
    await synced.hub.go_away()
    await synced.agent.wait_for_line(lambda line: "live sync: the connection ended" in line)
    synced.snapshots.body = tarball(project_files(**{"src/while-away.txt": b"edited while away\n"}))
    synced.hub.come_back()
    await synced.agent.wait_for_line(lambda line: "resync wrote 1 and deleted 1 files" in line, within=20)
    assert (synced.workspace / "src/while-away.txt").read_text() == "edited while away\n"
    assert not (synced.workspace / "notes.txt").exists()
    editor = await synced.hub.editor()
    await editor.status("ready")
    await editor.send("file_deleted", {"path": "src/while-away.txt"})
    await eventually(lambda: not (synced.workspace / "src/while-away.txt").exists(), within=10)


async def test_a_package_json_change_reinstalls_and_restarts_reporting_each_step(synced: Synced) -> None:
    """installing, starting, ready go out as status; the agent's notes go out as log lines."""
    editor = await synced.hub.editor()
    await editor.status("ready")
    before = (await synced.agent.health()).json()["dev_server"]["pid"]
    package = (synced.workspace / "package.json").read_text().replace('"1.0.0"', '"1.0.1"')
    await editor.send("file_changed", {"path": "package.json", "content": package, "encoding": "utf8"})
    for state in ("installing", "starting", "ready"):
        status = await editor.status(state, within=60)
        assert status["preview_id"] == PREVIEW_ID and status["at"].endswith("Z")
    note = await editor.log.expect(lambda e: e["event"] == "log" and "dependencies changed" in e["line"])
    assert note["stream"] == "agent"
    assert (await synced.agent.health()).json()["dev_server"]["pid"] != before, "the dev server restarted"
