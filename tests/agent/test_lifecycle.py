"""The agent from start to stop: states, long-polls, proxying, logs, restarts and failures."""

from __future__ import annotations

import asyncio
import json
import os
import signal

import pytest
from websockets.asyncio.client import unix_connect
from websockets.typing import Subprotocol

from tests.agent.harness import TOKEN, Agent, AgentFactory, SnapshotServer, gone, project_files, tarball


async def test_health_reports_the_states_up_to_ready(start_agent: AgentFactory) -> None:
    """The first answer comes while npm installs; the long-poll then returns ready with its timings."""
    async with start_agent() as agent:
        await agent.serving()
        first = (await agent.health()).json()
        assert first["state"] in ("installing", "starting", "ready")
        response = await agent.health("?wait=ready&timeout=60")
        body = response.json()
    assert response.status_code == 200
    assert body["state"] == "ready"
    assert body["detail"] is None
    assert body["project_id"] == "proj-1"
    assert isinstance(body["protocol"], int)
    assert body["dev_server"]["state"] == "running"
    assert body["dev_server"]["restarts"] == 0
    timings = body["timings"]
    assert all(
        timings[name] > 0 for name in ("fetch_ms", "install_ms", "dev_server_ms", "serve_ms", "ready_ms")
    )


async def test_the_snapshot_is_fetched_with_the_agent_token(agent: Agent, snapshots: SnapshotServer) -> None:
    """The snapshot request carries AGENT_TOKEN as a bearer token, and the files land in the workspace."""
    assert snapshots.authorizations == [f"Bearer {TOKEN}"]
    assert (agent.workspace / "server.js").is_file()


async def test_a_long_poll_returns_when_its_timeout_passes(agent: Agent) -> None:
    """Waiting for a state that does not come ends after the timeout with the current state."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    response = await agent.health("?wait=failed&timeout=0.3")
    assert response.json()["state"] == "ready"
    assert 0.3 <= loop.time() - began < 5


@pytest.mark.parametrize(
    "query", ["?wait=soon", "?wait=ready&timeout=-1", "?wait=ready&timeout=x", "?wait=ready&timeout=999"]
)
async def test_a_malformed_long_poll_is_a_4xx(agent: Agent, query: str) -> None:
    """Bad wait or timeout values are refused with a message, not a 500 or a hang."""
    response = await agent.health(query)
    assert response.status_code == 422
    assert response.json()["error"] == "bad_request"


async def test_a_page_is_proxied_with_the_host_the_dev_server_expects(agent: Agent) -> None:
    """Everything but the agent's own paths reaches the dev server, with Host rewritten to 127.0.0.1:port."""
    page = await agent.client.get("/")
    assert page.status_code == 200
    assert "hello from server.js" in page.text
    headers = (await agent.client.get("/headers", headers={"Host": "p1.preview.localhost:8000"})).json()
    port = (await agent.health()).json()["dev_server"]["port"]
    assert headers["host"] == f"127.0.0.1:{port}"
    assert headers["x-forwarded-host"] == "p1.preview.localhost:8000"


async def test_proxied_traffic_is_reported_as_activity(agent: Agent) -> None:
    """A proxied request sets last_activity_at; /health itself does not count."""
    assert (await agent.health()).json()["last_activity_at"] is None
    await agent.client.get("/")
    assert (await agent.health()).json()["last_activity_at"] is not None


async def test_a_websocket_is_proxied_with_its_subprotocol(agent: Agent) -> None:
    """Text and binary frames reach the dev server's WebSocket and come back, subprotocol included."""
    async with (
        asyncio.timeout(10),
        unix_connect(agent.socket_path, "ws://agent/ws", subprotocols=[Subprotocol("vite-hmr")]) as ws,
    ):
        assert ws.subprotocol == "vite-hmr"
        await ws.send("hello")
        assert await ws.recv() == "hello"
        await ws.send(b"\x01\x02")
        assert await ws.recv() == b"\x01\x02"


async def test_a_request_made_before_the_dev_server_is_ready_waits_for_it(start_agent: AgentFactory) -> None:
    """A page requested while npm still installs is answered once the dev server is up, not failed."""
    async with start_agent() as agent:
        await agent.serving()
        page = await agent.client.get("/")
        assert page.status_code == 200
        assert "hello from server.js" in page.text


async def test_logs_hold_install_and_dev_server_output(agent: Agent) -> None:
    """The logs endpoint returns the tail of npm's and the dev server's output, with streams and times."""
    await agent.wait_for_line(lambda line: "hot reload:" in line)  # the last line the agent adds of itself
    response = await agent.client.get("/__velocity/logs?tail=2000")
    lines = response.json()["lines"]
    assert any(
        line["stream"] == "stdout" and "server.js listening on 127.0.0.1" in line["line"] for line in lines
    )
    assert any(line["stream"] == "agent" and line["line"].startswith("started the install") for line in lines)
    assert any(line["stream"] == "install" for line in lines), "npm's output is tagged as the install's"
    assert all(line["at"].endswith("Z") for line in lines)
    tail = (await agent.client.get("/__velocity/logs?tail=2")).json()["lines"]
    assert tail == lines[-2:]


async def test_the_dev_server_never_sees_the_agent_token(agent: Agent) -> None:
    """AGENT_* settings, the token above all, stay out of the user's processes."""
    env = (await agent.client.get("/env")).json()
    assert TOKEN not in json.dumps(env)
    assert env["PORT"] == str((await agent.health()).json()["dev_server"]["port"])


async def test_a_crashed_dev_server_is_restarted(agent: Agent) -> None:
    """A dev server that exits is started again and the preview comes back to ready."""
    await agent.client.get("/crash")
    async with asyncio.timeout(30):
        while True:
            body = (await agent.health()).json()
            if body["dev_server"]["restarts"] == 1 and body["state"] == "ready":
                break
            await asyncio.sleep(0.05)
    assert body["dev_server"]["exit_code"] is None
    assert "hello from server.js" in (await agent.client.get("/")).text


async def test_a_dev_server_killed_by_sigkill_fails_the_agent(agent: Agent) -> None:
    """SIGKILL (the OOM killer's signal) fails the preview at once, names the signal, and exits with 3."""
    node_pid = int((await agent.client.get("/pid")).text)
    waiting = asyncio.create_task(agent.health("?wait=failed&timeout=60"))
    await asyncio.sleep(0)  # let the long-poll go out before the kill
    os.kill(node_pid, signal.SIGKILL)
    response = await waiting
    assert response.status_code == 503
    assert response.json()["state"] == "failed"
    assert "SIGKILL" in response.json()["detail"]
    assert await agent.exit_code() == 3


async def test_sigterm_stops_the_agent_and_its_dev_server(agent: Agent) -> None:
    """SIGTERM ends the agent with status 0 and takes the dev server's whole process group with it."""
    node_pid = int((await agent.client.get("/pid")).text)
    agent.process.send_signal(signal.SIGTERM)
    assert await agent.exit_code() == 0
    assert await gone(node_pid)


async def test_a_failed_agent_asked_to_stop_exits_0_after_saying_why(start_agent: AgentFactory) -> None:
    """A stop (SIGTERM) is not a failure: the exit status says the machine was stopped, /health
    has already said why the preview failed."""
    async with start_agent(AGENT_TOKEN="wrong", AGENT_LINGER_SECONDS="60") as agent:
        await agent.serving()
        assert "HTTP 401" in (await agent.health()).json()["detail"]
        agent.process.send_signal(signal.SIGTERM)
        assert await agent.exit_code() == 0


async def test_a_snapshot_with_a_parent_path_is_refused(
    start_agent: AgentFactory, snapshots: SnapshotServer
) -> None:
    """A tarball member named ../evil fails the preview before anything is written, and the agent exits 1."""
    snapshots.body = tarball({**project_files(), "../evil": b"owned"})
    async with start_agent() as agent:
        await agent.serving()
        response = await agent.health()
        assert response.status_code == 503
        assert "refused" in response.json()["detail"]
        assert await agent.exit_code() == 1
        assert not (agent.workspace.parent / "evil").exists()
        assert not (agent.workspace / "server.js").exists()


async def test_a_snapshot_refused_by_its_server_fails_with_the_status(
    start_agent: AgentFactory, snapshots: SnapshotServer
) -> None:
    """A wrong token is a 401 from the snapshot server, reported in the detail; the agent exits 1."""
    async with start_agent(AGENT_TOKEN="wrong") as agent:
        await agent.serving()
        detail = (await agent.health()).json()["detail"]
        assert "HTTP 401" in detail
        assert await agent.exit_code() == 1


async def test_a_failing_install_fails_the_agent(
    start_agent: AgentFactory, snapshots: SnapshotServer
) -> None:
    """npm failing (here: the project's own preinstall script) fails the preview with npm's output."""
    scripts = {"preinstall": "echo cannot-install-here && exit 7", "dev": "node server.js"}
    package = {"name": "broken", "version": "1.0.0", "scripts": scripts}
    snapshots.body = tarball(project_files(**{"package.json": json.dumps(package).encode()}))
    async with start_agent() as agent:
        await agent.serving()
        body = (await agent.health("?wait=ready&timeout=60")).json()
        assert body["state"] == "failed"
        assert "installing the dependencies failed" in body["detail"]
        assert "cannot-install-here" in (await agent.client.get("/__velocity/logs")).text
        assert await agent.exit_code() == 1
