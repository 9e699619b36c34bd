"""Serve the agent's app with uvicorn on a unix socket or a TCP port.

Importing this module imports uvicorn, the most expensive step of the agent's own start; ``main``
imports it only after the dependency install is running, so that the two overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
import sys
from collections.abc import Iterator

import uvicorn

from velocity.agent.app import AgentApp
from velocity.domain.errors import AgentError

GRACEFUL_SHUTDOWN_SECONDS = 2


class _Server(uvicorn.Server):
    # uvicorn would install its own SIGTERM/SIGINT handlers and raise the signal again on exit; the
    # agent handles both itself, to stop the dev server first.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _inherited(fd: int) -> socket.socket:
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise AgentError(f"AGENT_LISTEN_FD {fd} is not an open socket: {exc}") from exc
    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 0:
        raise AgentError(f"AGENT_LISTEN_FD {fd} is a socket that is not listening")
    sock.set_inheritable(False)  # nothing the agent starts gets it
    return sock


def _listen_tcp(port: int) -> socket.socket:
    """``[::]`` with IPV6_V6ONLY off answers both Fly's private network (6PN, IPv6 only) and its proxy
    (IPv4); a kernel without IPv6 gets ``0.0.0.0``. IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only
    on connections of sockets that say TCP, and without it every keep-alive response the router asks
    for waits 40 ms for a delayed ACK."""
    family = socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    except OSError:
        family, sock = socket.AF_INET, socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(("::", port))
        else:
            sock.bind(("0.0.0.0", port))
    except OSError as exc:
        sock.close()
        raise AgentError(f"cannot listen on port {port}: {exc}") from exc
    return sock


def _listen(path: str | None, port: int, fd: int | None = None) -> socket.socket:
    """Bind here rather than in uvicorn, which would exit the process on a bind error."""
    if fd is not None:
        return _inherited(fd)
    if path is None:
        return _listen_tcp(port)
    # A socket left behind by an earlier agent would make bind fail; anything else there is kept.
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        # The host side connects from outside the sandbox, possibly as another user.
        os.chmod(path, 0o666)
    except OSError as exc:
        sock.close()
        raise AgentError(f"cannot listen on unix socket {path}: {exc}") from exc
    return sock


class AgentServer:
    def __init__(
        self, app: AgentApp, *, socket_path: str | None, port: int, listen_fd: int | None = None
    ) -> None:
        self._socket_path = None if listen_fd is not None else socket_path
        self._listen_fd = listen_fd
        self._port = port
        config = uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,
            access_log=False,
            proxy_headers=False,
            # The dev server's own Server and Date headers pass through; uvicorn's would double them.
            server_header=False,
            date_header=False,
            ws="websockets-sansio",
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        )
        self._server = _Server(config)
        self._sockets: list[socket.socket] = []
        self._main_loop: asyncio.Task[None] | None = None

    async def start(self) -> None:
        _configure_logging()
        self._sockets = [_listen(self._socket_path, self._port, self._listen_fd)]
        config = self._server.config
        config.load()
        self._server.lifespan = config.lifespan_class(config)
        await self._server.startup(sockets=self._sockets)
        self._main_loop = asyncio.create_task(self._server.main_loop())

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._main_loop is not None:
            await self._main_loop
        await self._server.shutdown(sockets=self._sockets)
        if self._socket_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._socket_path)


def _configure_logging() -> None:
    # uvicorn's errors (an exception in a request) go to stderr; its info lines stay quiet.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("agent: %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
