"""Starting children in their own process group, and signalling the group.

npm and dev servers start helpers of their own (a shell, node, esbuild's service). Each child is made
a session and process-group leader, so that stopping it signals the whole group, and helpers left
behind after the leader exits can be killed rather than kept holding the dev server's port. This
module is synchronous so that the install can start before the agent imports asyncio.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from velocity.agent.identity import UserCode
from velocity.agent.logs import LogBuffer
from velocity.domain.errors import AgentError


def start(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    logs: LogBuffer,
    label: str,
    user: UserCode | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` as the leader of a new process group, with its output on two pipes; as the
    project's own user when the machine has one (``identity``)."""
    try:
        process = subprocess.Popen(
            list(argv) if user is None else user.command(argv),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        raise AgentError(f"cannot start the {label}: {argv[0]} is not installed in this machine") from exc
    except OSError as exc:
        raise AgentError(f"cannot start the {label} ({' '.join(argv)}): {exc}") from exc
    logs.agent(f"started the {label} (pid {process.pid}): {' '.join(argv)}")
    return process


def signal_group(pgid: int, sig: signal.Signals) -> None:
    # The group outlives its leader while members remain; an empty group is simply gone.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
