"""How the agent serves and runs its dev server, beyond the defaults."""

from __future__ import annotations

import json

import httpx

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
