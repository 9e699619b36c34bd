"""Running the orchestrator: bind first (so port 0 works and URLs are right), then serve."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass

import uvicorn

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


@dataclass
class Running:
    runtime: Runtime
    server: uvicorn.Server
    serving: asyncio.Task[None]

    @property
    def settings(self) -> Settings:
        return self.runtime.settings


def bind(settings: Settings) -> tuple[socket.socket, Settings]:
    """Listen on VELOCITY_HOST:VELOCITY_PORT; with port 0 the settings learn the port chosen."""
    family = socket.AF_INET6 if ":" in settings.velocity_host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.velocity_host, settings.velocity_port))
    sock.listen(2048)
    port = sock.getsockname()[1]
    return sock, settings.model_copy(update={"velocity_port": port})


@contextlib.asynccontextmanager
async def running(
    settings: Settings, *, stop_previews: bool = True, handle_signals: bool = False
) -> AsyncIterator[Running]:
    """An orchestrator serving in the background of the caller; closed (previews too) on exit."""
    sock, settings = bind(settings)
    runtime = await Runtime.open(settings)
    config = uvicorn.Config(
        runtime.asgi(),
        lifespan="off",
        log_level="warning",
        ws_max_size=16 * 1024 * 1024,
        timeout_graceful_shutdown=3,
    )
    server = _Server(config)
    server.handle_signals = handle_signals
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    runtime.start_loops()
    try:
        yield Running(runtime, server, serving)
    finally:
        server.should_exit = True
        await serving
        await runtime.close(stop_previews=stop_previews)
        sock.close()
