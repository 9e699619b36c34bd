"""One preview's events as a single stream: its state changes and its agent's ``status`` and ``log``.

State changes come from the store (every one the service makes is recorded there): first those
already recorded, then the new ones as the service announces them. The agent's messages come from the
preview channel (``preview:{project_id}``) through a listener on the Realtime hub, when this
orchestrator hosts one; messages of another preview of the same project are left out. The stream
ends once the preview has stopped or failed and its last state change has been sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from velocity.auth import Caller
from velocity.realtime.contract import LOG, STATUS, preview_topic
from velocity.service.previews import PreviewService

AGENT_EVENTS: Final = frozenset({STATUS, LOG})
# Agent messages waiting for a slow reader beyond this many are dropped (state changes never are).
MAX_WAITING: Final = 1000
# How long the stream may stay silent: a keepalive (``None``) is yielded after this many seconds.
KEEPALIVE_SECONDS: Final = 15.0
# How often the stream of every preview's changes reads the store.
ALL_POLL_SECONDS: Final = 1.0

Listener = Callable[[str, Any], None]
Listen = Callable[[str, Listener], Callable[[], None]]
"""``listen(topic, listener)`` → unsubscribe; ``RealtimeHub.listen`` is one."""


@dataclass(frozen=True, slots=True)
class StreamEvent:
    kind: str  # "state", or the agent's "status" / "log"
    data: dict[str, Any]
    id: int | None = None  # state changes carry their store id, for Last-Event-ID


@dataclass(eq=False, slots=True)
class _Feed:
    queue: asyncio.Queue[StreamEvent | None] = field(default_factory=asyncio.Queue)  # None: the end
    stop: asyncio.Event = field(default_factory=asyncio.Event)  # the reader has gone
    dropped: int = 0


class PreviewEvents:
    def __init__(
        self, previews: PreviewService, *, listen: Listen | None, keepalive: float = KEEPALIVE_SECONDS
    ) -> None:
        self._previews = previews
        self._listen = listen
        self._keepalive = keepalive
        self._watchers: dict[_Feed, asyncio.Task[None]] = {}
        self._closing = asyncio.Event()

    async def aclose(self) -> None:
        """End every open stream and wait for their watchers (the orchestrator is stopping)."""
        self._closing.set()
        for feed in self._watchers:
            feed.stop.set()
            feed.queue.put_nowait(None)
        if self._watchers:
            await asyncio.wait(list(self._watchers.values()), timeout=5)

    async def stream(
        self, caller: Caller, preview_id: str, *, after_id: int = 0
    ) -> AsyncIterator[StreamEvent | None]:
        """The events of the caller's preview after store event ``after_id``; ``None`` is a keepalive."""
        preview = await self._previews.get(caller, preview_id)
        feed = _Feed()
        unlisten = None
        # The watcher reads the store, so it is never cancelled (see ``PreviewService.changes``): told
        # to stop, it ends at its next wait. The reader below only waits, and may be cancelled.
        watcher = asyncio.create_task(self._states(caller, preview_id, after_id, feed))
        self._watchers[feed] = watcher
        watcher.add_done_callback(lambda _: self._watchers.pop(feed, None))
        try:
            if self._listen is not None:
                unlisten = self._listen(preview_topic(preview.project_id), _agent_messages(preview_id, feed))
            while True:
                try:
                    async with asyncio.timeout(self._keepalive):
                        item = await feed.queue.get()
                except TimeoutError:
                    yield None
                    continue
                if item is None:
                    return
                yield item
        finally:
            feed.stop.set()
            if unlisten is not None:
                unlisten()

    async def everything(self, *, after_id: int | None = None) -> AsyncIterator[StreamEvent | None]:
        """Every preview's state changes after store event ``after_id`` (None: from now on), for the
        operators' dashboard; ``None`` is a keepalive. Read from the store every
        ``ALL_POLL_SECONDS``, so the changes other replicas make are in it too."""
        last = after_id if after_id is not None else await self._previews.last_event_id()
        quiet = 0.0
        while not self._closing.is_set():
            found = await self._previews.all_events(after_id=last)
            for event_id, event in found:
                last = event_id
                data = {
                    "preview_id": event.preview_id,
                    "state": event.state.value,
                    "detail": event.detail,
                    "at": _iso(event.at),
                }
                yield StreamEvent("state", data, id=event_id)
            if found:
                quiet = 0.0
                continue
            quiet += ALL_POLL_SECONDS
            if quiet >= self._keepalive:
                quiet = 0.0
                yield None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(ALL_POLL_SECONDS):
                    await self._closing.wait()

    async def _states(self, caller: Caller, preview_id: str, after_id: int, feed: _Feed) -> None:
        try:
            with self._previews.changes(preview_id) as changed:
                await self._follow(caller, preview_id, after_id, feed, changed)
        finally:
            feed.queue.put_nowait(None)  # whatever ended the watch (an error too) ends the stream

    async def _follow(
        self, caller: Caller, preview_id: str, last: int, feed: _Feed, changed: asyncio.Event
    ) -> None:
        while not feed.stop.is_set():
            changed.clear()  # before the reads: a change made while they run is seen by the wait
            current = await self._previews.get(caller, preview_id)
            for event_id, event in await self._previews.events(caller, preview_id, after_id=last):
                last = event_id
                data = {"state": event.state.value, "detail": event.detail, "at": _iso(event.at)}
                feed.queue.put_nowait(StreamEvent("state", data, id=event_id))
            if not current.is_live:
                return
            # The timeout re-reads the store now and then, for a change made by another process.
            waits = [asyncio.ensure_future(changed.wait()), asyncio.ensure_future(feed.stop.wait())]
            try:
                await asyncio.wait(waits, timeout=self._keepalive * 4, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for wait in waits:
                    wait.cancel()
                await asyncio.gather(*waits, return_exceptions=True)


def _agent_messages(preview_id: str, feed: _Feed) -> Listener:
    def listener(event: str, payload: Any) -> None:
        if event not in AGENT_EVENTS or not isinstance(payload, dict):
            return
        if payload.get("preview_id", preview_id) != preview_id:
            return  # another preview of the same project
        if feed.queue.qsize() >= MAX_WAITING:
            feed.dropped += 1
            return
        data = dict(payload)
        if feed.dropped and event == LOG:
            data["dropped"] = int(data.get("dropped", 0)) + feed.dropped
            feed.dropped = 0
        feed.queue.put_nowait(StreamEvent(event, data))

    return listener


def _iso(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
