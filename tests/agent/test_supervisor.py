"""The supervisor in-process: the restart seam that live file sync uses."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.agent.harness import PROJECT, gone
from velocity.agent.exits import ExitCode
from velocity.agent.logs import LogBuffer
from velocity.agent.sealing import SealReport
from velocity.agent.state import AgentState, Status
from velocity.agent.supervisor import Supervisor
from velocity.agent.workspace import Workspace
from velocity.domain.install_seal import seal


class Running:
    def __init__(
        self,
        supervisor: Supervisor,
        task: asyncio.Task[ExitCode],
        status: Status,
        logs: LogBuffer,
        workspace: Workspace,
    ) -> None:
        self.supervisor = supervisor
        self.task = task
        self.status = status
        self.logs = logs
        self.workspace = workspace

    async def get(self, path: str) -> str:
        async with httpx.AsyncClient(trust_env=False) as client:
            return (await client.get(f"http://127.0.0.1:{self.status.dev_server.port}{path}")).text


@pytest.fixture
async def running(tmp_path: Path, npm_cache: Path) -> AsyncIterator[Running]:
    """A supervisor running the test project in tmp_path, ready."""
    root = tmp_path / "project"
    shutil.copytree(PROJECT, root)
    status, logs = Status("proj-1"), LogBuffer(echo=None)
    env = {**os.environ, "NPM_CONFIG_CACHE": str(npm_cache)}
    supervisor = Supervisor(root, status, logs, env=env, dev_port=None)
    supervisor.start_install()
    task = asyncio.create_task(supervisor.run())
    try:
        assert await status.wait_for(lambda s: s.state is AgentState.READY, 60), status.detail
        yield Running(supervisor, task, status, logs, Workspace(root))
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_restart_serves_the_new_code_and_is_not_counted_as_a_crash(running: Running) -> None:
    """After a file write, restart() returns once the new dev server answers; restarts stays 0."""
    old_pid = int(await running.get("/pid"))
    running.workspace.write(
        "server.js", (PROJECT / "server.js").read_bytes().replace(b"hello from", b"hi from")
    )
    assert await running.supervisor.restart()
    assert "hi from server.js" in await running.get("/")
    assert int(await running.get("/pid")) != old_pid
    assert await gone(old_pid)
    assert running.status.dev_server.restarts == 0


async def test_a_restart_can_reinstall_the_dependencies_first(running: Running) -> None:
    """restart(reinstall=True) runs npm again before starting the dev server."""
    installs = sum(line.line.startswith("started the install") for line in running.logs.tail(2000))
    assert await running.supervisor.restart(reinstall=True)
    after = sum(line.line.startswith("started the install") for line in running.logs.tail(2000))
    assert after == installs + 1
    assert running.status.state is AgentState.READY


async def test_cancelling_the_supervisor_stops_the_dev_server_group(running: Running) -> None:
    """Cancelling run() (the agent shutting down) takes the dev server's whole process group with it."""
    node_pid = int(await running.get("/pid"))
    assert node_pid != running.status.dev_server.pid, "npm leads the group; node is its grandchild"
    running.task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running.task
    assert await gone(node_pid)
    assert running.status.dev_server.state == "stopped"


async def test_each_finished_install_is_sealed_to_the_host_before_the_dev_server_starts(
    tmp_path: Path, npm_cache: Path
) -> None:
    """The seal file holds the seal of node_modules as npm left it, also after a reinstall, even
    though the dev server then writes into node_modules; no child inherits the descriptor."""
    root = tmp_path / "project"
    shutil.copytree(PROJECT, root)
    (root / "helper").mkdir()
    (root / "helper" / "package.json").write_text('{"name": "helper", "version": "1.0.0"}')
    package = json.loads((root / "package.json").read_text())
    package["dependencies"] = {"helper": "file:helper"}
    package["scripts"]["dev"] = (
        "node -e \"require('fs').writeFileSync('node_modules/late.js', '')\" && node server.js"
    )
    (root / "package.json").write_text(json.dumps(package))
    seal_file = tmp_path / "install-seal"
    fd = os.open(seal_file, os.O_WRONLY | os.O_CREAT, 0o600)
    status, logs = Status("proj-1"), LogBuffer(echo=None)
    env = {**os.environ, "NPM_CONFIG_CACHE": str(npm_cache)}
    supervisor = Supervisor(root, status, logs, env=env, dev_port=None, seal=SealReport(fd))
    supervisor.start_install()
    task = asyncio.create_task(supervisor.run())
    try:
        assert await status.wait_for(lambda s: s.state is AgentState.READY, 60), status.detail
        first = seal_file.read_text()
        assert (root / "node_modules" / "late.js").exists(), "the dev server wrote into node_modules"
        assert first and first != seal(root / "node_modules")
        (root / "node_modules" / "late.js").unlink()
        assert first == seal(root / "node_modules"), "the seal is of the tree npm left"
        pid = status.dev_server.pid
        assert pid is not None
        opened = {os.readlink(f"/proc/{pid}/fd/{n}") for n in os.listdir(f"/proc/{pid}/fd")}
        assert str(seal_file) not in opened

        (root / "helper" / "index.js").write_text("module.exports = 2\n")  # npm links file: packages
        package["dependencies"]["left-pad-local"] = "file:helper"
        (root / "package.json").write_text(json.dumps(package))
        assert await supervisor.restart(reinstall=True)
        second = seal_file.read_text()
        assert second != first and (root / "node_modules" / "left-pad-local").is_symlink()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        os.close(fd)
