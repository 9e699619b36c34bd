"""What a part running beside the agent's server gets: the seam for live file sync.

An extension is an async function taking an ``AgentContext``; ``runtime.run`` starts each one once the
agent serves and cancels it when the agent stops. Live file sync is one: it writes files through
``workspace``, calls ``supervisor.restart(reinstall=True)`` after a ``package.json`` change, and
broadcasts ``logs.subscribe`` lines and ``status`` changes (``status.changes`` counts them).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from velocity.agent.config import AgentConfig
from velocity.agent.logs import LogBuffer
from velocity.agent.state import Status
from velocity.agent.supervisor import Supervisor
from velocity.agent.workspace import Workspace


@dataclass(frozen=True, slots=True)
class AgentContext:
    config: AgentConfig
    status: Status
    logs: LogBuffer
    workspace: Workspace
    supervisor: Supervisor


Extension = Callable[[AgentContext], Awaitable[None]]
