"""The last lines of install and dev server output, kept in memory and echoed to the agent's stdout."""

from __future__ import annotations

import collections
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

# stdout and stderr of the dev server, install for the package manager (both pipes), agent for its own notes.
Stream = Literal["stdout", "stderr", "install", "agent"]

CAPACITY = 2000
MAX_LINE = 4000  # characters; a minified bundle printed on one line must not take the buffer's memory
# The console (the machine's log file, when stdout is one) starts over past this many bytes, so a
# dev server printing without end cannot fill the host's disk; the last lines are always there.
CONSOLE_LIMIT = 4 << 20


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

    def __init__(
        self,
        capacity: int = CAPACITY,
        echo: TextIO | None = sys.stdout,
        *,
        console_limit: int = CONSOLE_LIMIT,
    ) -> None:
        self._lines: collections.deque[LogLine] = collections.deque(maxlen=capacity)
        self._echo = echo
        self._echoed = 0
        self._console_limit = console_limit
        self._listeners: list[Callable[[LogLine], None]] = []

    def subscribe(self, listener: Callable[[LogLine], None]) -> Callable[[], None]:
        """Call ``listener`` with every new line (live file sync broadcasts them); returns an unsubscribe.
        Listeners run inline and must not block."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def add(self, stream: Stream, line: str) -> None:
        line = line.rstrip("\r")
        if len(line) > MAX_LINE:
            line = line[:MAX_LINE]
        entry = LogLine(stream, line, time.time())
        self._lines.append(entry)
        for listener in list(self._listeners):
            listener(entry)
        if self._echo is not None:
            text = f"{stream}: {line}\n"
            try:
                if self._echoed + len(text) > self._console_limit:
                    self._start_console_over()
                self._echo.write(text)
                self._echo.flush()
                self._echoed += len(text)
            except (OSError, ValueError):
                # Nobody reads the agent's stdout any more. Stop echoing rather than fail the pumps,
                # which would leave the children blocked on full pipes.
                self._echo = None

    def _start_console_over(self) -> None:
        """Empty the console file and say so; a console that is no file (a pipe, a terminal) only
        restarts the count."""
        assert self._echo is not None
        self._echoed = 0
        try:
            os.ftruncate(self._echo.fileno(), 0)
        except (OSError, ValueError):
            return
        notice = f"agent: the console passed {self._console_limit} bytes and started over\n"
        self._echo.write(notice)
        self._echoed = len(notice)

    def agent(self, message: str) -> None:
        self.add("agent", message)

    def tail(self, count: int) -> list[LogLine]:
        if count <= 0:
            return []
        lines = list(self._lines)
        return lines[-count:]
