"""Writes to one file spaced out enough for the dev server's watcher to see each of them.

Vite watches files with chokidar 3, which drops a ``change`` of a file that comes within 50 ms of the
previous one (``_throttle(EV_CHANGE, path, 50)``, with no trailing event): the last edit of a quick
burst could be written and never shown. So the agent writes a given file at most once per
``SAME_FILE_GAP_SECONDS``; an edit that comes sooner waits for the rest of the gap, and whatever
arrived for the same files meanwhile is merged into it, so the final content is always what is
written last. Edits to other files are not held up by this (each file has its own clock), except
that the queue keeps its order: a later message waits behind a held one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Final

# chokidar's 50 ms, plus room for the watcher's own stat() and a busy event loop in the dev server.
SAME_FILE_GAP_SECONDS: Final = 0.08


class Pacer:
    def __init__(
        self, gap: float = SAME_FILE_GAP_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._gap = gap
        self._clock = clock
        self._written: dict[str, float] = {}

    def delay(self, paths: Iterable[str]) -> float:
        """Seconds to wait before every one of ``paths`` may be written again (0: now)."""
        now = self._clock()
        waits = [self._gap - (now - self._written[p]) for p in paths if p in self._written]
        return max([0.0, *waits])

    def wrote(self, paths: Iterable[str]) -> None:
        now = self._clock()
        if len(self._written) > 1024:  # forget files written long enough ago
            self._written = {p: t for p, t in self._written.items() if now - t < self._gap}
        for path in paths:
            self._written[path] = now
