"""Writes to one file spaced out enough for the dev server's watcher to see each of them.

Vite watches files with chokidar 3, which drops a ``change`` of a file that comes within 50 ms of the
previous one (``_throttle(EV_CHANGE, path, 50)``, with no trailing event): the last edit of a quick
burst could be written and never shown. So the agent writes a given file at most once per
``SAME_FILE_GAP_SECONDS``; an edit that comes sooner waits for the rest of the gap, and whatever
arrived for the same files meanwhile is merged into it, so the final content is always what is
written last. Edits to other files are not held up by this (each file has its own clock), except
that the queue keeps its order: a later message waits behind a held one.

The gap assumes that the watcher hears of a write promptly; a dev server busy with the previous
update may hear late and still drop the next one. So the last write of a burst (a write that came
less than ``BURST_SECONDS`` after the one before it) is confirmed a gap later by touching the file's
mtime, which chokidar reports as one more change: whichever of the two it hears, it reads the final
content. A single edit after a pause is not touched.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Final

# chokidar's 50 ms, plus room for the watcher's own stat() and a busy event loop in the dev server.
SAME_FILE_GAP_SECONDS: Final = 0.08
BURST_SECONDS: Final = 0.5


class Pacer:
    def __init__(
        self, gap: float = SAME_FILE_GAP_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._gap = gap
        self._clock = clock
        self._written: dict[str, float] = {}
        self._pending: dict[str, asyncio.TimerHandle] = {}

    def delay(self, paths: Iterable[str]) -> float:
        """Seconds to wait before every one of ``paths`` may be written again (0: now)."""
        now = self._clock()
        waits = [self._gap - (now - self._written[p]) for p in paths if p in self._written]
        return max([0.0, *waits])

    def wrote(self, paths: Iterable[str], *, confirm: Callable[[str], None] | None = None) -> None:
        """Record writes made now. With ``confirm``, a write that came less than ``BURST_SECONDS``
        after the previous one of its file is confirmed by ``confirm(path)`` a gap later, unless the
        file is written again first (that write is confirmed instead)."""
        now = self._clock()
        if len(self._written) > 1024:  # forget files written long enough ago
            self._written = {p: t for p, t in self._written.items() if now - t < BURST_SECONDS}
        for path in paths:
            previous = self._written.get(path)
            self._written[path] = now
            pending = self._pending.pop(path, None)
            if pending is not None:
                pending.cancel()
            if confirm is not None and previous is not None and now - previous < BURST_SECONDS:
                loop = asyncio.get_running_loop()
                self._pending[path] = loop.call_later(self._gap, self._confirm, path, confirm)

    def close(self) -> None:
        for pending in self._pending.values():
            pending.cancel()
        self._pending.clear()

    def _confirm(self, path: str, confirm: Callable[[str], None]) -> None:
        del self._pending[path]
        self._written[path] = self._clock()  # counts for the gap; never confirmed in turn
        confirm(path)
