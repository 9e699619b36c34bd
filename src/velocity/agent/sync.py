"""Live file sync: the agent's side of the preview channel (docs/protocol.md, contract version 1).

The agent joins ``preview:{PROJECT_ID}`` on Supabase Realtime (locally, the orchestrator's hub) with
the official Python client, the anon key as its API key and its own ``AGENT_TOKEN`` as access token.
Editor messages go into one queue and are applied in the order they arrived, by one worker:
``changes`` checks and writes them, ``pacing`` keeps writes of one file far enough apart for Vite's
watcher to see each, a ``package.json`` change reinstalls and restarts the dev server. The agent's
state changes go out as ``status``, its output as rate-limited ``log`` (``reports``).

Nothing is replayed on a channel, so every (re)join puts a resync at the head of the queue: the
worker fetches the snapshot again and applies what differs (``resync``) before any message received
after the join. The connection is the agent's to keep: when it drops, the client is closed and a new
one connects after a back-off, so a hub that restarts, or a network that comes back, is rejoined.
Without ``SUPABASE_URL`` sync is off.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import importlib
import logging
import os
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from velocity.agent.changes import EVENTS, Change, Refused, apply, check, parse
from velocity.agent.context import AgentContext
from velocity.agent.logs import LogLine
from velocity.agent.pacing import Pacer
from velocity.agent.reports import LogLimiter, error_message, status_message
from velocity.agent.resync import differences, snapshot_files
from velocity.agent.snapshot import fetch
from velocity.agent.state import AgentState, Status
from velocity.agent.versions import AGENT_VERSION
from velocity.agent.workspace import Workspace
from velocity.domain.errors import PreviewError
from velocity.realtime.contract import CONTRACT_VERSION, LOG, STATUS, preview_topic

if TYPE_CHECKING:
    from realtime import AsyncRealtimeChannel

# Seconds before the next connection attempt, by failures in a row; a successful join starts over.
BACKOFF_SECONDS: Final = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
CONNECT_TIMEOUT_SECONDS: Final = 10
CLOSE_TIMEOUT_SECONDS: Final = 1.0
OUTBOX_MESSAGES: Final = 256
_RESYNC: Final = "velocity:resync"  # a queue item, never an event on the wire


@dataclass(frozen=True, slots=True)
class SyncSettings:
    url: str  # the Realtime base: <SUPABASE_URL>/realtime/v1
    anon_key: str
    access_token: str | None
    project_id: str
    preview_id: str | None
    snapshot_url: str | None

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], *, project_id: str, snapshot_url: str | None
    ) -> SyncSettings | None:
        base = env.get("SUPABASE_URL", "").strip().rstrip("/")
        if not base:
            return None
        return cls(
            url=f"{base}/realtime/v1",
            anon_key=env.get("SUPABASE_ANON_KEY", "").strip(),
            access_token=env.get("AGENT_TOKEN") or None,
            project_id=project_id,
            preview_id=env.get("PREVIEW_ID") or None,
            snapshot_url=snapshot_url,
        )


async def live_sync(context: AgentContext) -> None:
    """The extension ``runtime.run`` starts: sync until cancelled; nothing without SUPABASE_URL."""
    config = context.config
    settings = SyncSettings.from_env(
        os.environ, project_id=config.project_id, snapshot_url=config.snapshot_url
    )
    if settings is None:
        return
    await LiveSync(context, settings).run()


class LiveSync:
    def __init__(self, context: AgentContext, settings: SyncSettings) -> None:
        self._context = context
        self._settings = settings
        self._topic = preview_topic(settings.project_id)
        self._inbox: collections.deque[tuple[str, Any]] = collections.deque()
        self._arrived = asyncio.Event()
        self._pacer = Pacer()
        self._outbox: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(OUTBOX_MESSAGES)
        self._channel: AsyncRealtimeChannel | None = None
        self._limiter = LogLimiter(settings.preview_id)
        self._known: set[str] = set()  # the project's paths: from the last snapshot, and edits since
        self._last_seq: int | None = None
        self._reinstall_wanted = False
        self._reinstalling: asyncio.Task[None] | None = None

    async def run(self) -> None:
        # The client (websockets, pydantic) loads in a thread, off the loop that serves the preview.
        await asyncio.to_thread(importlib.import_module, "realtime")
        # Connection trouble is reported in the agent's own log, once; not as tracebacks on stderr.
        logging.getLogger("realtime").propagate = False
        unsubscribe = self._context.logs.subscribe(self._log_line)
        tasks = [
            asyncio.create_task(self._apply_in_order(), name="sync-apply"),
            asyncio.create_task(self._report_status(), name="sync-status"),
            asyncio.create_task(self._send(), name="sync-send"),
        ]
        try:
            await self._stay_connected()
        finally:
            unsubscribe()
            self._pacer.close()
            running = [task for task in [*tasks, self._reinstalling] if task is not None]
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    # --- the connection ---------------------------------------------------------------------------

    async def _stay_connected(self) -> None:
        failures = 0
        last_error = ""
        while True:
            try:
                await self._session()
                failures, last_error = 0, ""
                self._context.logs.agent("live sync: the connection ended; reconnecting")
            except Exception as exc:
                failures += 1
                error = f"{type(exc).__name__}: {exc}"[:300]
                if error != last_error:  # once per kind of failure, not once per attempt
                    self._context.logs.agent(f"live sync: cannot join {self._topic}: {error}; retrying")
                    last_error = error
            delay = BACKOFF_SECONDS[min(failures, len(BACKOFF_SECONDS) - 1)]
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    async def _session(self) -> None:
        """Connect, join and serve until the connection or the channel ends; raises if it never joins."""
        from realtime import AsyncRealtimeClient, RealtimeSubscribeStates

        s = self._settings
        client = AsyncRealtimeClient(
            s.url, token=s.anon_key, auto_reconnect=False, timeout=CONNECT_TIMEOUT_SECONDS
        )
        if s.access_token:
            await client.set_auth(s.access_token)
        presence_key = f"agent:{s.preview_id or s.project_id}"
        channel = client.channel(
            self._topic,
            {
                "config": {
                    "broadcast": {"ack": True, "self": False},
                    "presence": {"key": presence_key, "enabled": True},
                    "private": True,
                }
            },
        )
        for event in EVENTS:
            channel.on_broadcast(event, self._received)
        channel.on_presence_join(self._presence_joined)
        joined, ended = asyncio.Event(), asyncio.Event()
        why: list[str] = []

        def on_state(state: RealtimeSubscribeStates, error: Exception | None) -> None:
            if state == RealtimeSubscribeStates.SUBSCRIBED:
                # Called as the join reply is read, before any broadcast after it: the resync comes
                # first in the queue, and the messages received from now on follow it.
                self._enqueue(_RESYNC, None)
                self._last_seq = None
                joined.set()
            else:
                why.append(f"{state.value}{f' ({error})' if error else ''}")
                ended.set()

        try:
            await client.connect()
            await channel.subscribe(on_state)
            if not joined.is_set():
                raise ConnectionError(f"the join was refused: {'; '.join(why) or 'no answer'}")
            self._channel = channel
            self._context.logs.agent(f"live sync: joined {self._topic}")
            meta = {"role": "agent", "contract": CONTRACT_VERSION, "agent_version": AGENT_VERSION}
            if s.preview_id:
                meta["preview_id"] = s.preview_id
            await channel.track(meta)
            self._publish(STATUS, status_message(self._context.status, s.preview_id))
            await ended.wait()
        finally:
            self._channel = None
            channel.rejoin_timer.reset()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                    await client.close()

    def _received(self, message: Mapping[str, Any]) -> None:
        self._enqueue(str(message.get("event")), message.get("payload"))

    def _presence_joined(self, key: str, current: list[Any], new: list[Any]) -> None:
        # A new editor tab should not wait for the next change to learn where things stand.
        if any(isinstance(meta, Mapping) and meta.get("role") == "editor" for meta in new):
            self._publish(STATUS, status_message(self._context.status, self._settings.preview_id))

    # --- applying ----------------------------------------------------------------------------------

    async def _apply_in_order(self) -> None:
        while True:
            event, payload = await self._next()
            if event == _RESYNC:
                await self._resync()
                continue
            parts = self._parsed(event, payload)
            # A file written less than a gap ago waits (see ``pacing``); what arrives meanwhile for it
            # and for others joins the wait, up to the next resync, and is written as one change.
            while parts and (delay := self._pacer.delay(p for part in parts for p in part.paths)) > 0:
                await asyncio.sleep(delay)
                while self._inbox and self._inbox[0][0] in EVENTS:
                    parts += self._parsed(*self._inbox.popleft())
            if parts:
                self._write(parts)

    async def _next(self) -> tuple[str, Any]:
        while not self._inbox:
            self._arrived.clear()
            await self._arrived.wait()
        return self._inbox.popleft()

    def _enqueue(self, event: str, payload: Any) -> None:
        self._inbox.append((event, payload))
        self._arrived.set()

    def _parsed(self, event: str, payload: Any) -> list[Change]:
        """The message as a change ([] if refused, which is reported); a ``seq`` jump asks for a resync."""
        if event not in EVENTS:
            return []
        try:
            change = parse(event, payload)
        except Refused as refused:
            self._refuse(refused)
            return []
        if change.seq is not None:
            # A jump means messages were lost: catch up from the snapshot. A smaller number is another
            # tab (or a reconnected one) counting from its own start, which is not a loss.
            if self._last_seq is not None and change.seq > self._last_seq + 1:
                self._context.logs.agent(f"live sync: messages {self._last_seq + 1}..{change.seq - 1} missed")
                self._enqueue(_RESYNC, None)
            self._last_seq = change.seq
        return [change]

    def _write(self, parts: list[Change]) -> None:
        merged = functools.reduce(Change.then, parts)
        try:
            apply(self._context.workspace, merged)
            applied = [merged]
        except Refused as refused:
            if len(parts) == 1:
                self._refuse(refused)
                return
            # Several messages merged while waiting: one refused file must not take the others along.
            applied = []
            for part in parts:
                try:
                    apply(self._context.workspace, part)
                    applied.append(part)
                except Refused as each:
                    self._refuse(each)
        for change in applied:
            self._pacer.wrote([path for path, _ in change.writes], confirm=self._touch)
            self._pacer.wrote(change.deletes)
            self._known.update(path for path, _ in change.writes)
            self._known.difference_update(change.deletes)
            if change.dependencies:
                self._dependencies_changed()

    def _touch(self, path: str) -> None:
        """Confirm the last write of a burst to the dev server's watcher (see ``pacing``)."""
        with contextlib.suppress(Refused, OSError):
            check(self._context.workspace, Change(writes=((path, b""),)))
            os.utime(self._context.workspace.root / path, follow_symlinks=False)

    async def _resync(self) -> None:
        s, workspace = self._settings, self._context.workspace
        if s.snapshot_url is None:
            return
        try:
            data = await asyncio.to_thread(fetch, s.snapshot_url, s.access_token)
            files = await asyncio.to_thread(snapshot_files, data)
            change = await asyncio.to_thread(differences, workspace.root, files, self._known)
        except PreviewError as exc:
            self._context.logs.agent(f"live sync: resync failed: {exc.message}")
            self._publish(STATUS, error_message(f"resync failed: {exc.message}", "", s.preview_id))
            return
        self._known = set(files)
        if not (change.writes or change.deletes):
            return
        refused = await asyncio.to_thread(_apply_each, workspace, change)
        self._pacer.wrote(change.paths)
        for item in refused:
            self._refuse(item)
        self._context.logs.agent(
            f"live sync: resync wrote {len(change.writes)} and deleted {len(change.deletes)} files"
        )
        if change.dependencies:
            self._dependencies_changed()

    def _refuse(self, refused: Refused) -> None:
        self._context.logs.agent(f"live sync: {refused.detail}")
        preview_id = self._settings.preview_id
        self._publish(STATUS, error_message(refused.detail, refused.path, preview_id))
        # The error is about one file; the next status says where the preview stands.
        self._publish(STATUS, status_message(self._context.status, preview_id))

    def _dependencies_changed(self) -> None:
        self._reinstall_wanted = True
        if self._reinstalling is None or self._reinstalling.done():
            self._reinstalling = asyncio.create_task(self._reinstall(), name="sync-reinstall")

    async def _reinstall(self) -> None:
        # One at a time; a change during a reinstall asks for one more after it.
        while self._reinstall_wanted:
            self._reinstall_wanted = False
            self._context.logs.agent("live sync: the dependencies changed: reinstalling, then restarting")
            await self._context.supervisor.restart(reinstall=True)

    # --- reporting ---------------------------------------------------------------------------------

    async def _report_status(self) -> None:
        status = self._context.status
        last: tuple[str, str | None] | None = None
        while not status.closing:
            current = (status.state.value, status.detail)
            if current != last:
                last = current
                self._publish(STATUS, status_message(status, self._settings.preview_id))
            if status.state is AgentState.FAILED:
                return  # terminal; wait_for would not wait
            await status.wait_for(_changed_since(status.changes), within=3600)

    def _log_line(self, line: LogLine) -> None:
        if self._channel is None:
            self._limiter.dropped += 1
            return
        message = self._limiter.admit(line)
        if message is not None:
            self._publish(LOG, message)

    def _publish(self, event: str, payload: dict[str, Any]) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self._outbox.put_nowait((event, payload))

    async def _send(self) -> None:
        while True:
            event, payload = await self._outbox.get()
            channel = self._channel
            if channel is None:
                continue  # the status goes out again on the next join
            with contextlib.suppress(Exception):
                await channel.send_broadcast(event, payload)


def _changed_since(seen: int) -> Callable[[Status], bool]:
    return lambda status: status.changes != seen


def _apply_each(workspace: Workspace, change: Change) -> list[Refused]:
    """A resync applies what it can: one refused file does not hold up the others."""
    refused: list[Refused] = []
    for path in change.deletes:
        try:
            apply(workspace, Change(deletes=(path,)))
        except Refused as exc:
            refused.append(exc)
    for write in change.writes:
        try:
            apply(workspace, Change(writes=(write,)))
        except Refused as exc:
            refused.append(exc)
    return refused
