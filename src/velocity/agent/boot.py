"""The agent's first steps, before asyncio or the web stack is imported.

Everything on the path to the dependency install is synchronous and imports little: read the snapshot,
unpack it, start npm. npm then runs while the rest of the agent loads.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass

from velocity.agent import managers
from velocity.agent.commands import install_command, nothing_to_install
from velocity.agent.config import AgentConfig
from velocity.agent.logs import LogBuffer
from velocity.agent.processes import start
from velocity.agent.snapshot import extract, fetch
from velocity.domain.errors import PreviewError


@dataclass(slots=True)
class Boot:
    """What the first steps left for the supervisor."""

    install: subprocess.Popen[bytes] | None = None
    install_started: float = 0.0
    fetch_ms: float | None = None
    error: str | None = None  # the preview failed before there was anything to supervise
    template: bytes | None = None  # a pooled machine's snapshot, which a claim swaps out


def boot(config: AgentConfig, logs: LogBuffer) -> Boot:
    result = Boot()
    missing = no_project(config)
    if config.policy_error is not None:
        # The machine could not be made safe for the project's code, so none of it runs.
        result.error = f"the machine's network policy could not be applied: {config.policy_error}"
        if missing is not None:
            result.error += f"; and {missing}"
        logs.agent(f"failed: {result.error}")
        return result
    if missing is not None:
        result.error = missing
        logs.agent(f"failed: {missing}")
        return result
    try:
        if config.snapshot_url is not None:
            began = time.monotonic()
            data = fetch(config.snapshot_url, config.token)
            members = extract(data, config.workspace)
            if config.pooled:
                result.template = data
            result.fetch_ms = round((time.monotonic() - began) * 1000, 1)
            logs.agent(f"snapshot: {members} entries, {len(data)} bytes in {result.fetch_ms:.0f} ms")
        command = install_command(config.workspace, os.environ)
        if command is None:
            logs.agent(nothing_to_install(config.workspace))
        else:
            result.install_started = time.monotonic()
            managers.prepare(command.manager, config.workspace)
            result.install = start(
                command.argv,
                cwd=config.workspace,
                env=command.env,
                logs=logs,
                label=f"install with {command.manager}",
                user=config.user,
            )
    except PreviewError as exc:
        result.error = exc.message
        logs.agent(f"failed: {exc.message}")
    return result


def no_project(config: AgentConfig) -> str | None:
    """Why there is nothing to preview, when neither a snapshot nor the workspace holds a project
    (the image run on its own, as the deployment guide's first test runs it)."""
    if config.snapshot_url is not None or (config.workspace / "package.json").exists():
        return None
    return (
        f"no project to preview: SNAPSHOT_URL is not set and {config.workspace} holds no package.json "
        "(the orchestrator sets SNAPSHOT_URL on each preview machine; to try the image alone, "
        f"mount a project at {config.workspace})"
    )
