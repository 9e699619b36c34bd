"""The agent's start-up sequence, ordered for speed.

Order matters: read the configuration, fetch and unpack the snapshot and start the dependency install
with little more than the standard library loaded; only then import asyncio, the supervisor and the web
stack (uvicorn), which load while npm runs. The reverse proxy's imports (httpx) follow in a thread once
``/health`` answers.
"""

from __future__ import annotations

import os
import sys
import time

from velocity.agent.boot import boot
from velocity.agent.config import AgentConfig
from velocity.agent.credentials import keep_to_myself, take_secrets
from velocity.agent.egress_bridge import start_bridge
from velocity.agent.exits import ExitCode
from velocity.agent.identity import SHARED_UMASK
from velocity.agent.logs import LogBuffer
from velocity.agent.machine_egress import start_machine_proxy
from velocity.agent.versions import AGENT_VERSION, PROTOCOL
from velocity.domain.errors import ConfigError


def main(started: float | None = None) -> int:
    """Run the agent; returns its exit code. ``started`` is when the process began its work."""
    started = time.monotonic() if started is None else started
    keep_to_myself()
    try:
        take_secrets(os.environ)
        config = AgentConfig.from_env(os.environ)
        if config.user is not None:
            os.umask(SHARED_UMASK)  # the project's user and the agent change each other's files
        config.prepare_workspace()
    except ConfigError as exc:
        print(f"velocity-agent: {exc.message}", file=sys.stderr)
        return ExitCode.CONFIG
    logs = LogBuffer()
    logs.agent(f"velocity agent {AGENT_VERSION} (protocol {PROTOCOL}) for project {config.project_id}")
    start_bridge(os.environ, logs)  # before the snapshot fetch and npm, which go through it
    try:
        start_machine_proxy(os.environ, logs)
    except ConfigError as exc:
        print(f"velocity-agent: {exc.message}", file=sys.stderr)
        return ExitCode.CONFIG
    first_steps = boot(config, logs)

    # From here on, loading overlaps the install.
    import asyncio

    from velocity.agent.runtime import run
    from velocity.agent.sync import live_sync

    return asyncio.run(run(config, logs, first_steps, started, extensions=[live_sync]))
