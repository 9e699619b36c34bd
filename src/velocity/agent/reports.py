"""What the agent tells the editor on the preview channel: ``status`` and rate-limited ``log`` messages.

Supabase counts messages per project, shared by every preview, so log lines go through a token
bucket (``LOG_MESSAGES_PER_SECOND``, bursts of ``LOG_BURST``); lines over the budget are dropped and
counted, and the next line sent says how many (``dropped``). The whole log stays on the agent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from velocity.agent.logs import LogLine, iso
from velocity.agent.state import AgentState, Status
from velocity.realtime.contract import LOG_BURST, LOG_MESSAGES_PER_SECOND

# The contract's states are the editor's view: fetching is part of getting dependencies ready.
_STATES = {
    AgentState.FETCHING: ("installing", "fetching the project"),
    AgentState.INSTALLING: ("installing", "installing the dependencies"),
    AgentState.STARTING: ("starting", "starting the dev server"),
    AgentState.READY: ("ready", "the dev server is ready"),
    AgentState.FAILED: ("error", "the preview failed"),
}


def status_message(status: Status, preview_id: str | None) -> dict[str, Any]:
    state, default = _STATES[status.state]
    return stamp({"state": state, "detail": status.detail or default}, preview_id)


def error_message(detail: str, path: str, preview_id: str | None) -> dict[str, Any]:
    return stamp({"state": "error", "detail": detail, "path": path}, preview_id)


def stamp(message: dict[str, Any], preview_id: str | None) -> dict[str, Any]:
    message["at"] = iso(time.time())
    if preview_id:
        message["preview_id"] = preview_id
    return message


class LogLimiter:
    """A token bucket: ``admit`` turns a line into a ``log`` message, or None when over the budget."""

    def __init__(
        self,
        preview_id: str | None,
        *,
        rate: float = LOG_MESSAGES_PER_SECOND,
        burst: int = LOG_BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._preview_id = preview_id
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()
        self.dropped = 0

    def admit(self, line: LogLine) -> dict[str, Any] | None:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens < 1:
            self.dropped += 1
            return None
        self._tokens -= 1
        message: dict[str, Any] = {"stream": line.stream, "line": line.line}
        if self._preview_id:
            message["preview_id"] = self._preview_id
        if self.dropped:
            message["dropped"], self.dropped = self.dropped, 0
        return message
