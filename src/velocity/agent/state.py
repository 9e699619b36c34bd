"""What the agent is doing, as ``/health`` reports it, and a way to wait for it to change."""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from velocity.agent.logs import iso
from velocity.agent.versions import AGENT_VERSION, PROTOCOL


class AgentState(enum.StrEnum):
    FETCHING = "fetching"
    INSTALLING = "installing"
    STARTING = "starting"
    READY = "ready"
    FAILED = "failed"  # terminal: the agent exits shortly after


class DevServerState(enum.StrEnum):
    PENDING = "pending"  # not started yet
    STARTING = "starting"  # spawned, not answering yet
    RUNNING = "running"  # answering on its port
    RESTARTING = "restarting"  # exited; waiting out the back-off
    STOPPED = "stopped"  # stopped for good


@dataclass(slots=True)
class DevServerStatus:
    pid: int | None = None
    port: int | None = None
    state: DevServerState = DevServerState.PENDING
    restarts: int = 0
    exit_code: int | None = None
    hmr: str = "unknown"  # ok, broken or unknown (velocity.agent.hmr)
    hmr_detail: str | None = None


@dataclass(slots=True)
class Timings:
    fetch_ms: float | None = None
    install_ms: float | None = None
    dev_server_ms: float | None = None
    serve_ms: float | None = None  # agent start → HTTP served
    ready_ms: float | None = None  # agent start → first ready


@dataclass(slots=True)
class Status:
    """The agent's state; each change wakes whoever waits in ``wait_for``.

    Changes swap in a fresh ``asyncio.Event`` and set the old one, so waiters are woken by events, and
    setters stay synchronous.
    """

    project_id: str
    started: float = field(default_factory=time.monotonic)
    state: AgentState = AgentState.FETCHING
    detail: str | None = None
    dev_server: DevServerStatus = field(default_factory=DevServerStatus)
    timings: Timings = field(default_factory=Timings)
    last_activity: float | None = None
    closing: bool = False
    pooled: bool = False  # a warm-pool machine waiting for a claim (``claim``)
    changes: int = 0  # counts notifications: a watcher compares it to see whether anything changed
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def set_state(self, state: AgentState, detail: str | None = None) -> None:
        if self.state is AgentState.FAILED:
            return  # terminal
        self.state = state
        self.detail = detail
        if state is AgentState.READY and self.timings.ready_ms is None:
            self.timings.ready_ms = self.elapsed_ms(self.started)
        self.notify()

    def fail(self, detail: str) -> None:
        self.set_state(AgentState.FAILED, detail)

    def close(self) -> None:
        """The agent is stopping: wake every waiter so that none holds the shutdown up."""
        self.closing = True
        self.notify()

    def notify(self) -> None:
        self.changes += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def touch(self) -> None:
        self.last_activity = time.time()

    async def wait_for(self, predicate: Callable[[Status], bool], within: float) -> bool:
        """Wait until ``predicate`` holds, the agent fails or closes, or ``within`` seconds pass."""
        try:
            async with asyncio.timeout(within):
                while not (predicate(self) or self.state is AgentState.FAILED or self.closing):
                    await self._changed.wait()
        except TimeoutError:
            pass
        return predicate(self)

    @staticmethod
    def elapsed_ms(since: float) -> float:
        return round((time.monotonic() - since) * 1000, 1)

    def to_json(self) -> dict[str, Any]:
        dev = self.dev_server
        return {
            "agent_version": AGENT_VERSION,
            "protocol": PROTOCOL,
            "project_id": self.project_id,
            "pooled": self.pooled,
            "state": self.state.value,
            "detail": self.detail,
            "dev_server": {
                "pid": dev.pid,
                "port": dev.port,
                "state": dev.state.value,
                "restarts": dev.restarts,
                "exit_code": dev.exit_code,
                "hmr": {"state": dev.hmr, "detail": dev.hmr_detail},
            },
            "timings": {
                "fetch_ms": self.timings.fetch_ms,
                "install_ms": self.timings.install_ms,
                "dev_server_ms": self.timings.dev_server_ms,
                "serve_ms": self.timings.serve_ms,
                "ready_ms": self.timings.ready_ms,
            },
            "last_activity_at": iso(self.last_activity) if self.last_activity is not None else None,
        }
