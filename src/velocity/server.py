"""Running the orchestrator: bind first (so port 0 works and URLs are right), then serve."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from velocity.runtime import Runtime
from velocity.settings import Settings

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn re-raises a captured Ctrl-C after shutdown, which would cut our cleanup short; here the
    first Ctrl-C (or SIGTERM) asks for a graceful stop, a second one forces it."""

    handle_signals = True

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if not self.handle_signals:
            yield
            return
        loop = asyncio.get_running_loop()

        def stop() -> None:
            self.force_exit = self.should_exit
            self.should_exit = True

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """How large a request head may be and how long a request may take to arrive.

    uvicorn bounds neither: a head that never ends (slowloris) or a body that trickles holds its
    connection forever, and a head of any size is buffered. Fly's proxy fronts production, but the
    orchestrator also serves loopback and private-network clients directly, so it bounds both itself.
    """

    head_timeout: float = 15.0  # s from a request's first byte (or the connection's start) to its blank line
    max_head_bytes: int = 64 * 1024  # request line and headers; a larger head gets 431
    body_idle_timeout: float = 30.0  # s without a byte of a body that is being read
    body_grace: float = 30.0  # s a body may take whatever its size...
    body_min_rate: float = 4096.0  # ...plus one s per this many bytes received (mod_reqtimeout's MinRate)
    # After an early answer (413, 401) the rest of the body is dropped for up to this long and this many
    # bytes; a body still coming then closes the connection. Closing at once could reset it before the
    # client reads the answer, and clients that send a whole body before reading (httpx) see the answer
    # if the body is not much larger than the largest one allowed (twice MAX_PROJECT_BYTES).
    linger: float = 5.0
    linger_bytes: int = 128 << 20


def guarded_protocol(limits: ConnectionLimits) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol, with ``limits`` enforced from its parser callbacks."""

    class Guarded(_GuardedHttpTools):
        pass

    Guarded.limits = limits
    return Guarded


class _GuardedHttpTools(HttpToolsProtocol):
    # States: idle (between requests), head, body (the app may be reading it), done (request read),
    # linger (answered before the body ended), upgraded (a websocket owns the connection now).
    limits = ConnectionLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._state = "idle"
        self._timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._body_start = self._body_last = 0.0
        self._body_bytes = 0
        self._dropped = 0

    def _arm(self, delay: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(max(delay, 0.0), self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.limits.head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._state == "linger":
            self._dropped += len(data)
            if self._dropped > self.limits.linger_bytes:
                self.transport.close()
                return
        elif self._state in ("idle", "head") and self._head_bytes > self.limits.max_head_bytes:
            self._refuse(b"431 Request Header Fields Too Large")
            return
        before = self._state
        super().data_received(data)
        # Counted after parsing, so a head is refused at most one read (256 KiB) past the limit; only
        # reads that were all head (a read that ends a body may start the next head: not counted).
        if before in ("idle", "head") and self._state in ("idle", "head"):
            self._head_bytes += len(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._state = "head"
        self._arm(self.limits.head_timeout)

    def on_headers_complete(self) -> None:
        self._head_bytes = 0
        if self.parser.should_upgrade() and self._should_upgrade():
            self._state = "upgraded"
            self._disarm()
        else:
            self._state = "body"
            self._body_start = self._body_last = self.loop.time()
            self._body_bytes = 0
            self._arm(self.limits.body_idle_timeout)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body_last = self.loop.time()
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._state == "body":
            self._state = "done"
            self._disarm()
        elif self._state == "linger":  # the body ended after all: the connection may serve another
            self._state = "idle"
            self._arm(self.timeout_keep_alive)
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._state == "body" and not self.transport.is_closing():
            self._state = "linger"
            self._dropped = 0
            self._arm(self.limits.linger)
        elif self._state == "done":
            self._state = "idle"

    def _expired(self) -> None:
        self._timer = None
        now = self.loop.time()
        if self._state == "body":
            # The app is not reading (its buffer is full, or the client awaits 100 Continue): this time
            # is not the client's.
            if self.flow.read_paused or self.cycle.waiting_for_100_continue:
                self._body_start += now - self._body_last
                self._body_last = now
                self._arm(self.limits.body_idle_timeout)
                return
            idle = self._body_last + self.limits.body_idle_timeout
            rate = self._body_start + self.limits.body_grace + self._body_bytes / self.limits.body_min_rate
            if min(idle, rate) > now:
                self._arm(min(idle, rate) - now)
                return
        if self._state == "head" or (self._state == "body" and not self.cycle.response_started):
            self._refuse(b"408 Request Timeout")
        elif self._state in ("idle", "body", "linger"):
            self.transport.close()

    def _refuse(self, status: bytes) -> None:
        log.debug("closing a connection from %s: %s", self.client, status.decode())
        self._disarm()
        self._state = "done"
        self.transport.write(
            b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: " + str(len(status)).encode() + b"\r\nconnection: close\r\n\r\n" + status
        )
        self.transport.close()


@dataclass
class Running:
    runtime: Runtime
    server: uvicorn.Server
    serving: asyncio.Task[None]
    loops: asyncio.Task[None]

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    async def wait(self) -> None:
        """Until the server stops (a signal); if a loop dies first, the server stops too and the
        loop's error is raised, so that the process ends rather than serve with no reaper."""
        await asyncio.wait({self.serving, self.loops}, return_when=asyncio.FIRST_COMPLETED)
        if self.loops.done() and not self.serving.done():
            self.server.should_exit = True
            await self.serving
            error = self.loops.exception() or RuntimeError("the loops ended")
            raise LoopFailed(f"a background loop failed, so the orchestrator stops: {error!r}") from error
        await self.serving


class LoopFailed(RuntimeError):
    """A loop died of something other than the provider's or the database's failures (a bug)."""


def bind(settings: Settings) -> tuple[socket.socket, Settings]:
    """Listen on VELOCITY_HOST:VELOCITY_PORT; with port 0 the settings learn the port chosen."""
    family = socket.AF_INET6 if ":" in settings.velocity_host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on connections of sockets that say TCP, and
    # without it each keep-alive response written in two parts waits 40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.velocity_host, settings.velocity_port))
    sock.listen(2048)
    port = sock.getsockname()[1]
    return sock, settings.model_copy(update={"velocity_port": port})


@contextlib.asynccontextmanager
async def running(
    settings: Settings,
    *,
    stop_previews: bool = True,
    handle_signals: bool = False,
    limits: ConnectionLimits = ConnectionLimits(),
) -> AsyncIterator[Running]:
    """An orchestrator serving in the background of the caller; closed (previews too) on exit."""
    sock, settings = bind(settings)
    runtime = await Runtime.open(settings)
    config = uvicorn.Config(
        runtime.asgi(),
        lifespan="off",
        log_level="warning",
        # httptools with slow and oversized requests cut off (ConnectionLimits).
        http=guarded_protocol(limits),
        ws_max_size=16 * 1024 * 1024,
        # As Supabase Realtime runs: deflate is per connection, so one broadcast to N sockets would be
        # compressed N times (see velocity.realtime.HubLimits).
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=3,
    )
    server = _Server(config)
    server.handle_signals = handle_signals
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    loops = await runtime.start_loops()
    try:
        yield Running(runtime, server, serving, loops)
    finally:
        await runtime.close_streams()
        server.should_exit = True
        await serving
        await runtime.close(stop_previews=stop_previews)
        sock.close()
