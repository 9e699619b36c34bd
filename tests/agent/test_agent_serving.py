"""How the agent serves and runs its dev server, beyond the defaults."""

from __future__ import annotations

import json

import httpx
import pytest
from websockets.asyncio.client import unix_connect
from websockets.exceptions import InvalidStatus

from tests.agent.harness import AgentFactory, SnapshotServer, project_files, tarball
from tests.proxy.harness import free_port


async def test_without_a_socket_the_agent_serves_tcp_on_port_over_ipv6_and_ipv4(
    start_agent: AgentFactory,
) -> None:
    """With AGENT_SOCKET unset the agent listens on [::]:$PORT for both families: Fly's private network
    reaches it over IPv6 only (``<id>.vm.<app>.internal`` has only an AAAA record), Fly's proxy over
    IPv4. AGENT_DEV_PORT fixes the dev port."""
    port, dev_port = free_port(), free_port()
    async with start_agent(AGENT_SOCKET=None, PORT=str(port), AGENT_DEV_PORT=str(dev_port)) as agent:
        await agent.serving()
        async with httpx.AsyncClient(base_url=f"http://[::1]:{port}", timeout=60, trust_env=False) as v6:
            body = (await v6.get("/health?wait=ready&timeout=60")).json()
            page = await v6.get("/")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10, trust_env=False) as v4:
            assert (await v4.get("/health")).json()["state"] == "ready"
    assert body["state"] == "ready"
    assert body["dev_server"]["port"] == dev_port
    assert "hello from server.js" in page.text


async def test_a_dev_server_that_keeps_crashing_fails_the_agent(
    start_agent: AgentFactory, snapshots: SnapshotServer
) -> None:
    """After three restarts one more crash fails the preview with the exit status, and the agent exits 1."""
    package = {"name": "crashy", "version": "1.0.0", "scripts": {"dev": 'node -e "process.exit(5)"'}}
    snapshots.body = tarball(project_files(**{"package.json": json.dumps(package).encode()}))
    async with start_agent() as agent:
        await agent.serving()
        response = await agent.health("?wait=failed&timeout=60")
        body = response.json()
        assert response.status_code == 503
        assert "exited with status 5, 4 times in a row" in body["detail"]
        assert body["dev_server"]["restarts"] == 3
        assert await agent.exit_code() == 1


async def test_a_project_without_a_dev_script_fails_with_a_clear_detail(
    start_agent: AgentFactory, snapshots: SnapshotServer
) -> None:
    """No scripts.dev means nothing to serve: the detail says what to add."""
    package = {"name": "no-dev", "version": "1.0.0", "scripts": {"start": "node server.js"}}
    snapshots.body = tarball(project_files(**{"package.json": json.dumps(package).encode()}))
    async with start_agent() as agent:
        await agent.serving()
        body = (await agent.health("?wait=ready&timeout=60")).json()
        assert body["state"] == "failed"
        assert 'no "dev" script' in body["detail"]
        assert await agent.exit_code() == 1


async def test_with_an_origin_secret_only_the_orchestrator_gets_past_health(
    start_agent: AgentFactory,
) -> None:
    """Any machine of a Fly organization reaches any other over the private network: with
    AGENT_ORIGIN_SECRET the agent answers only requests that carry it (compared in constant time), but
    ``GET /health`` for Fly's checks; a websocket without it never opens; the dev server never sees the
    header."""
    secret = "s3cret-for-this-preview"
    async with start_agent(AGENT_ORIGIN_SECRET=secret) as agent:
        await agent.ready()
        for headers in ({}, {"x-velocity-origin": "wrong"}, {"x-velocity-origin": secret.upper()}):
            for path in ("/", "/__velocity/logs", "/headers"):
                refused = await agent.client.get(path, headers=headers)
                assert refused.status_code == 403, (path, headers)
                assert "through the orchestrator" in refused.json()["message"]
        assert (await agent.client.get("/health")).status_code == 200
        page = await agent.client.get("/headers", headers={"x-velocity-origin": secret})
        assert page.status_code == 200
        assert "x-velocity-origin" not in page.json()
        logs = await agent.client.get("/__velocity/logs", headers={"x-velocity-origin": secret})
        assert logs.status_code == 200
        with pytest.raises(InvalidStatus):
            async with unix_connect(agent.socket_path, "ws://agent/ws"):
                pass
        async with unix_connect(
            agent.socket_path, "ws://agent/ws", additional_headers={"x-velocity-origin": secret}
        ) as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"
        env = (await agent.client.get("/env", headers={"x-velocity-origin": secret})).json()
        assert "AGENT_ORIGIN_SECRET" not in env and secret not in json.dumps(env)
