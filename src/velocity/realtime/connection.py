"""One accepted websocket: a reader, a writer and the bounded queue between the hub and the writer.

Frames are handled in the order they arrive, one at a time, on the reader. Everything the hub sends
goes through the queue, so no channel ever waits on a socket. A connection whose queue fills up (the
client stopped reading, or reads slower than its channels produce) is dropped: it leaves its channels
at once, its reason is logged, and the client's own reconnect and rejoin take it from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketDisconnected

from velocity.realtime.core import HubCore
from velocity.realtime.serializers import Serializer

logger = logging.getLogger(__name__)

_ids = itertools.count(1)

# How a socket that the client already closed shows up on send: not worth a log line.
_GONE = (WebSocketDisconnect, WebSocketDisconnected, OSError)

# Close codes (RFC 6455): 1001 the server is going away; 1008 policy; 1013 try again later.
GOING_AWAY: Final = 1001
TOO_SLOW: Final = 1013
IDLE: Final = 1000


class Connection:
    """Implements ``channels.Peer`` for the hub's channels; ``run`` owns the socket until it closes."""

    def __init__(self, websocket: WebSocket, serializer: Serializer, core: HubCore, *, who: str) -> None:
        self.id = next(_ids)
        self.who = who
        self._ws = websocket
        self._serializer = serializer
        self._core = core
        self._queue: asyncio.Queue[str | bytes] = asyncio.Queue(core.limits.queue_frames)
        self._close: tuple[int, str] | None = None
        self._client_closed = False
        self._writer: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<connection {self.id} {self.who} vsn={self._serializer.vsn}>"

    @property
    def serializer(self) -> Serializer:
        return self._serializer

    def push(self, data: str | bytes) -> None:
        if self._close is not None:
            return
        try:
            self._queue.put_nowait(data)
        except asyncio.QueueFull:
            self._core.counters.dropped_connections += 1
            self.shut(TOO_SLOW, f"too slow: {self._queue.maxsize} frames waiting to be sent")

    def shut(self, code: int, reason: str) -> None:
        """End this connection from the hub's side: no more frames in or out, then a close frame."""
        if self._close is not None:
            return
        self._close = (code, reason)
        level = logging.WARNING if code == TOO_SLOW else logging.INFO
        logger.log(level, "realtime: closing %r (%d): %s", self, code, reason)
        # Cancelling the writer (possibly blocked on a full socket) wakes ``run``; leaving the channels
        # happens there, outside any fan-out loop that may have called us.
        if self._writer is not None:
            self._writer.cancel()

    async def run(self, handle: Callable[[str | bytes], Awaitable[None]], leave: Callable[[], None]) -> None:
        """Read and write until either side ends; then ``leave`` the channels and close the socket."""
        self._writer = asyncio.create_task(self._write(), name=f"realtime-writer-{self.id}")
        reader = asyncio.create_task(self._read(handle), name=f"realtime-reader-{self.id}")
        try:
            await asyncio.wait({self._writer, reader}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, self._writer):
                task.cancel()
            results = await asyncio.gather(reader, self._writer, return_exceptions=True)
            for result in results:
                if isinstance(result, Exception) and not isinstance(result, _GONE):
                    logger.error("realtime: %r failed", self, exc_info=result)
            self._close = self._close or (GOING_AWAY, "connection ended")
            leave()
            await self._send_close()

    async def _read(self, handle: Callable[[str | bytes], Awaitable[None]]) -> None:
        limits = self._core.limits
        while self._close is None:
            try:
                async with asyncio.timeout(limits.idle_timeout):
                    message = await self._ws.receive()
            except TimeoutError:
                self.shut(IDLE, f"no frame for {limits.idle_timeout:g} s")
                return
            if message["type"] == "websocket.disconnect":
                self._client_closed = True
                self._close = (message.get("code", 1000), "client closed")
                return
            data: str | bytes | None = message.get("text")
            if data is None:
                data = message.get("bytes")
            if data is None:
                continue
            self._core.counters.frames_in += 1
            await handle(data)

    async def _write(self) -> None:
        send = self._ws.send
        while True:
            data = await self._queue.get()
            if isinstance(data, bytes):
                await send({"type": "websocket.send", "bytes": data})
            else:
                await send({"type": "websocket.send", "text": data})
            self._core.counters.frames_out += 1

    async def _send_close(self) -> None:
        if self._close is None or self._client_closed:
            return
        code, reason = self._close
        # A client that stopped reading may never let the close frame out; give up after a moment
        # and let the server close the transport when the handler returns.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._core.limits.close_timeout):
                await self._ws.close(code, reason[:120])
