"""Fixtures of the agent tests: a snapshot server, an environment, and agents started as real processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.agent.harness import TOKEN, Agent, AgentFactory, SnapshotServer


@pytest.fixture
def scratch() -> Iterator[Path]:
    # Unix socket paths are limited to 107 bytes, which pytest's tmp_path can exceed.
    with tempfile.TemporaryDirectory(prefix="va-", dir="/tmp") as directory:
        yield Path(directory)


@pytest.fixture(scope="session")
def npm_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("npm-cache")


@pytest.fixture
async def snapshots() -> AsyncIterator[SnapshotServer]:
    server = SnapshotServer()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
def agent_env(scratch: Path, snapshots: SnapshotServer, npm_cache: Path) -> dict[str, str]:
    """A complete, valid environment for one agent."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(scratch),
        "PROJECT_ID": "proj-1",
        "SNAPSHOT_URL": snapshots.url,
        "AGENT_TOKEN": TOKEN,
        "WORKSPACE": str(scratch / "workspace"),
        "AGENT_SOCKET": str(scratch / "agent.sock"),
        "NPM_CONFIG_CACHE": str(npm_cache),
    }


@pytest.fixture
def start_agent(agent_env: dict[str, str]) -> AgentFactory:
    """Start an agent with the fixture's environment, changed by keyword arguments (None removes)."""

    @contextlib.asynccontextmanager
    async def start(**changes: str | None) -> AsyncIterator[Agent]:
        env = dict(agent_env)
        for name, value in changes.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "velocity.agent",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        agent = Agent(process, env.get("AGENT_SOCKET", ""), Path(env.get("WORKSPACE", ".")))
        try:
            yield agent
        finally:
            await agent.close()

    return start


@pytest.fixture
async def agent(start_agent: AgentFactory) -> AsyncIterator[Agent]:
    """An agent serving the test project, already ready."""
    async with start_agent() as running:
        await running.ready()
        yield running
