"""The last lines of install and dev server output, kept in memory and echoed to the agent's stdout."""

from __future__ import annotations

import collections
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

Stream = Literal["stdout", "stderr", "agent"]

CAPACITY = 2000
MAX_LINE = 8 * 1024  # a minified bundle printed on one line must not take the buffer's memory


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class LogLine:
    stream: Stream
    line: str
    at: float  # seconds since the epoch

    def to_json(self) -> dict[str, Any]:
        return {"stream": self.stream, "line": self.line, "at": iso(self.at)}


class LogBuffer:
    """A ring of the last ``capacity`` lines."""

    def __init__(self, capacity: int = CAPACITY, echo: TextIO | None = sys.stdout) -> None:
        self._lines: collections.deque[LogLine] = collections.deque(maxlen=capacity)
        self._echo = echo

    def add(self, stream: Stream, line: str) -> None:
        line = line.rstrip("\r")
        if len(line) > MAX_LINE:
            line = line[:MAX_LINE] + " [truncated]"
        self._lines.append(LogLine(stream, line, time.time()))
        if self._echo is not None:
            try:
                self._echo.write(f"{stream}: {line}\n")
                self._echo.flush()
            except (OSError, ValueError):
                # Nobody reads the agent's stdout any more. Stop echoing rather than fail the pumps,
                # which would leave the children blocked on full pipes.
                self._echo = None

    def agent(self, message: str) -> None:
        self.add("agent", message)

    def tail(self, count: int) -> list[LogLine]:
        if count <= 0:
            return []
        lines = list(self._lines)
        return lines[-count:]
