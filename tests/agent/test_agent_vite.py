"""A real Vite project through the agent: launched from its entry file, pages and HMR through the proxy.

Needs the repository's Vite example with its node_modules installed (``make setup`` does). The
node_modules are hard-linked into the workspace first, as a provider with a warm copy does, so the
install runs offline. The orchestrator's end-to-end tests cover Vite inside a sandbox.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from websockets.asyncio.client import unix_connect
from websockets.typing import Subprotocol

from tests.agent.harness import AgentFactory, SnapshotServer, tarball
from velocity.agent.workspace import Workspace

EXAMPLE = Path(__file__).parents[2] / "examples" / "react-vite"
NPM_CACHE = Path.home() / ".npm"


def _vite_is_cached() -> bool:
    index = NPM_CACHE / "_cacache" / "index-v5"
    if not index.is_dir():
        return False
    return any(
        b"registry.npmjs.org/vite/-/" in path.read_bytes() for path in index.rglob("*") if path.is_file()
    )


@pytest.fixture(autouse=True)
def _example_is_built() -> None:
    """The example and its dependencies come from ``make setup``; without them this is a failure."""
    assert _vite_is_cached(), "Vite is not in the npm cache: run `make setup`"
    assert (EXAMPLE / "node_modules").is_dir(), "examples/react-vite is not built: run `make setup`"


def _example_files() -> dict[str, bytes]:
    files = {}
    for path in EXAMPLE.rglob("*"):
        relative = path.relative_to(EXAMPLE)
        if path.is_file() and relative.parts[0] not in ("node_modules", "dist"):
            files[relative.as_posix()] = path.read_bytes()
    return files


@pytest.fixture
def warm_node_modules(agent_env: dict[str, str]) -> None:
    """The example's node_modules, hard-linked into the workspace the way a provider places a warm copy."""
    workspace = Path(agent_env["WORKSPACE"])
    workspace.mkdir()
    shutil.copytree(
        EXAMPLE / "node_modules", workspace / "node_modules", copy_function=os.link, symlinks=True
    )


async def test_a_vite_project_is_served_and_hot_reloads_through_the_agent(
    start_agent: AgentFactory, snapshots: SnapshotServer, warm_node_modules: None
) -> None:
    """Vite starts as node vite.js (not npx), answers through the agent, and HMR updates cross it."""
    snapshots.body = tarball(_example_files())
    async with start_agent(npm_config_offline="true") as agent:
        await agent.serving()
        body = (await agent.health("?wait=ready&timeout=120")).json()
        assert body["state"] == "ready", (body["detail"], agent.lines[-15:])
        started = await agent.wait_for_line(lambda line: "started the dev server" in line)
        assert "node node_modules/vite/bin/vite.js --host 127.0.0.1" in started
        page = await agent.client.get("/", headers={"Host": "p1.preview.localhost:8000"})
        assert '<div id="root">' in page.text
        client = (await agent.client.get("/@vite/client")).text
        token = re.search(r'const wsToken = "([^"]+)"', client)
        assert token is not None, "Vite's client carries the HMR token"
        uri = f"ws://p1.preview.localhost:8000/?token={token.group(1)}"
        async with (
            asyncio.timeout(30),
            unix_connect(agent.socket_path, uri, subprotocols=[Subprotocol("vite-hmr")]) as ws,
        ):
            assert json.loads(await ws.recv())["type"] == "connected"
            assert (await agent.client.get("/src/App.jsx")).status_code == 200  # now in the module graph
            # Through the seam live file sync uses: an atomic rename must still be an HMR update.
            edited = (EXAMPLE / "src" / "App.jsx").read_bytes() + b"\n// edited\n"
            Workspace(agent.workspace).write("src/App.jsx", edited)
            while (message := json.loads(await ws.recv()))["type"] != "update":
                pass
        assert message["updates"][0]["path"] == "/src/App.jsx"


async def test_the_agent_reports_whether_vite_s_hot_reload_answers(
    start_agent: AgentFactory, snapshots: SnapshotServer, warm_node_modules: None
) -> None:
    """Once the dev server is ready the agent opens Vite's hot-reload websocket as a browser would:
    ``dev_server.hmr`` in /health says ``ok``."""
    snapshots.body = tarball(_example_files())
    async with start_agent(npm_config_offline="true") as agent:
        await agent.serving()
        assert (await agent.health("?wait=ready&timeout=120")).json()["state"] == "ready"
        line = await agent.wait_for_line(lambda line: "hot reload:" in line)
        assert line.endswith("hot reload: ok"), line
        body = (await agent.health()).json()
        assert body["dev_server"]["hmr"] == {"state": "ok", "detail": None}


async def test_a_dev_server_whose_hot_reload_is_refused_is_reported_broken(
    start_agent: AgentFactory, snapshots: SnapshotServer, warm_node_modules: None
) -> None:
    """A plugin that drops every websocket upgrade: pages still load, but an editor would stop
    updating. /health says so, and why."""
    files = _example_files()
    dropper = (
        b"plugins: [react(), { name: 'drop-upgrades', configureServer(server) {"
        b" server.httpServer.prependListener('upgrade', (request, socket) => socket.destroy()) } }],"
    )
    files["vite.config.js"] = files["vite.config.js"].replace(b"plugins: [react()],", dropper)
    snapshots.body = tarball(files)
    async with start_agent(npm_config_offline="true") as agent:
        await agent.serving()
        body = (await agent.health("?wait=ready&timeout=120")).json()
        assert body["state"] == "ready", (body["detail"], agent.lines[-15:])
        line = await agent.wait_for_line(lambda line: "hot reload:" in line)
        assert "hot reload: broken (Vite's hot-reload websocket" in line, line
        hmr = (await agent.health()).json()["dev_server"]["hmr"]
        assert hmr["state"] == "broken" and "hot-reload websocket" in hmr["detail"]
