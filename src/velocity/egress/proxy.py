"""The egress proxy: one asyncio server, one listener per caller, every destination checked.

A listener belongs to one caller (locally: a unix socket bind-mounted into that sandbox alone), so the
proxy knows who asks without trusting anything the request says. ``CONNECT host:port`` opens a tunnel
(HTTPS); a request with an absolute ``http://`` URI is forwarded as one request per connection, so
every request is checked on its own; an Upgrade (websocket) answered with 101 becomes a tunnel.
Refusals are plain-text answers naming the host and the setting that would change them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from velocity.egress.addresses import IPAddress, parse_address
from velocity.egress.policy import Caller, EgressPolicy, Refused, Target
from velocity.egress.wire import (
    MAX_HEAD_BYTES,
    ProxyRequest,
    body_length,
    origin_head,
    parse_inner_request,
    parse_request,
    pipe,
    read_head,
    refusal,
    relay_body,
    response_head,
    response_length,
    status_of,
)

log = logging.getLogger(__name__)

Resolver = Callable[[str, int], Awaitable[Sequence[IPAddress]]]


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    """The host's resolver (``getaddrinfo``), IPv4 first: the proxy, not the preview, resolves names."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = parse_address(str(sockaddr[0]).partition("%")[0])
        if address is not None and address not in found:
            found.append(address)
    return sorted(found, key=lambda a: a.version)


@dataclass(frozen=True, slots=True)
class Limits:
    head_seconds: float = 30.0  # to send a request head
    resolve_seconds: float = 10.0
    connect_seconds: float = 10.0
    connections_per_caller: int = 128


@dataclass(eq=False)
class _Exchange:
    """One client connection and the server connection it leads to, closed together."""

    caller: Caller
    streams: list[asyncio.StreamWriter]
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def abort(self) -> None:
        for stream in self.streams:
            stream.transport.abort()


@dataclass
class _Listener:
    caller: Caller
    path: Path | None
    server: asyncio.Server | None = None
    exchanges: set[_Exchange] = field(default_factory=set)


class EgressProxy:
    def __init__(
        self, policy: EgressPolicy, *, resolver: Resolver = system_resolver, limits: Limits | None = None
    ) -> None:
        self.policy = policy
        self._resolver = resolver
        self._limits = limits or Limits()
        self._listeners: dict[str, _Listener] = {}

    async def listen_unix(self, path: Path, caller: Caller) -> None:
        """Serve ``caller`` on a unix socket at ``path`` (any user may connect: the mount decides who can)."""
        await self.close_listener(caller.machine_id)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # left by an earlier orchestrator
        listener = self._listeners[caller.machine_id] = _Listener(caller, path)
        listener.server = await asyncio.start_unix_server(
            lambda r, w: self._serve(listener, r, w), path=str(path), limit=MAX_HEAD_BYTES
        )
        os.chmod(path, 0o666)

    async def listen_tcp(self, host: str, port: int, caller: Caller) -> int:
        """Serve ``caller`` on a TCP address (in a machine of its own); returns the port bound."""
        await self.close_listener(caller.machine_id)
        listener = self._listeners[caller.machine_id] = _Listener(caller, None)
        listener.server = await asyncio.start_server(
            lambda r, w: self._serve(listener, r, w), host=host, port=port, limit=MAX_HEAD_BYTES
        )
        bound: int = listener.server.sockets[0].getsockname()[1]
        return bound

    async def close_listener(self, machine_id: str) -> None:
        """Stop serving a caller and end its open connections."""
        listener = self._listeners.pop(machine_id, None)
        if listener is None:
            return
        if listener.server is not None:
            listener.server.close()
        # Aborting the sockets ends each exchange's copying; its task then finishes on its own.
        exchanges = list(listener.exchanges)
        for exchange in exchanges:
            exchange.abort()
        for exchange in exchanges:
            await exchange.done.wait()
        if listener.server is not None:
            await listener.server.wait_closed()
        if listener.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(listener.path)

    async def aclose(self) -> None:
        for machine_id in list(self._listeners):
            await self.close_listener(machine_id)

    # --- one connection ---------------------------------------------------------------------------
    async def _serve(
        self, listener: _Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        exchange = _Exchange(listener.caller, [writer])
        listener.exchanges.add(exchange)
        try:
            async with asyncio.timeout(self._limits.head_seconds):
                head = await read_head(reader)
            if head is None:
                return
            # After the head, so the answer is read rather than cut off by a reset.
            if len(listener.exchanges) > self._limits.connections_per_caller:
                raise Refused("too many open connections from this preview", status=503)
            request = parse_request(head)
            if request.is_connect:
                await self._tunnel(exchange, request, reader, writer)
            else:
                await self._forward(exchange, request, reader, writer)
        except Refused as exc:
            # Policy refusals are what an operator looks for; an unreachable server is routine.
            level = logging.WARNING if exc.status == 403 else logging.INFO
            log.log(level, "egress %s refused: %s", exchange.caller.machine_id, exc.message)
            # Also after a 1xx from the server: a final answer may follow an interim one.
            with contextlib.suppress(OSError):
                writer.write(refusal(exc.status, exc.message))
                await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # a peer went away or stalled: nothing to answer
        finally:
            for stream in exchange.streams:
                stream.close()
            listener.exchanges.discard(exchange)
            exchange.done.set()

    async def _tunnel(
        self,
        exchange: _Exchange,
        request: ProxyRequest,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        target = self.policy.tunnel(request.host, request.port)
        if target.inspected:
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            async with asyncio.timeout(self._limits.head_seconds):
                head = await read_head(reader)
            if head is not None:
                await self._forward(
                    exchange, parse_inner_request(head, target.host, target.port), reader, writer
                )
            return
        up_reader, up_writer = await self._dial(exchange, target, f"CONNECT {target.host}:{target.port}")
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await _splice(reader, writer, up_reader, up_writer)

    async def _forward(
        self,
        exchange: _Exchange,
        request: ProxyRequest,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        target = self.policy.request(
            exchange.caller, request.method, request.host, request.port, request.path
        )
        length = body_length(request)
        up_reader, up_writer = await self._dial(
            exchange, target, f"{request.method} http://{target.host}:{target.port}{request.path}"
        )
        internal = target.fixed is not None  # the orchestrator: it learns which preview is calling
        up_writer.write(origin_head(request, caller_project=exchange.caller.project_id if internal else None))
        # The body goes on while the answer comes back: a server may answer before reading it all.
        body = asyncio.create_task(relay_body(length, reader, up_writer))
        # A body that breaks off leaves the server waiting for the rest: end the exchange instead.
        body.add_done_callback(lambda done: _abort_if_failed(done, up_writer))
        try:
            while True:
                head = await read_head(up_reader)
                if head is None:
                    raise Refused(
                        f"{target.host}:{target.port} closed the connection without answering", status=502
                    )
                status = status_of(head)
                if status < 200 and status != 101:  # 100 Continue and the like: passed on as they are
                    writer.write(response_head(head, upgraded=True))
                    continue
                upgraded = status == 101 and request.wants_upgrade
                writer.write(response_head(head, upgraded=upgraded))
                await writer.drain()
                break
            if upgraded:
                await body
                await _splice(reader, writer, up_reader, up_writer)
            else:
                await relay_body(response_length(head, request.method, status), up_reader, writer)
                await writer.drain()
        finally:
            body.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError, ConnectionError):
                await body

    async def _dial(
        self, exchange: _Exchange, target: Target, what: str
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect to exactly the addresses that were checked (no second lookup to rebind)."""
        limits = self._limits
        if target.fixed is not None:
            candidates: Sequence[tuple[str, int]] = [target.fixed]
        else:
            literal = parse_address(target.host)
            try:
                async with asyncio.timeout(limits.resolve_seconds):
                    addresses = [literal] if literal else await self._resolver(target.host, target.port)
            except (OSError, TimeoutError) as exc:
                raise Refused(f"cannot resolve {target.host}: {exc or 'timed out'}", status=502) from None
            if not addresses:
                raise Refused(f"cannot resolve {target.host}: no addresses", status=502)
            self.policy.check_addresses(target, addresses)
            candidates = [(str(address), target.port) for address in addresses]
        failure: BaseException | None = None
        for host, port in candidates:
            try:
                async with asyncio.timeout(limits.connect_seconds):
                    connection = await asyncio.open_connection(host, port, limit=MAX_HEAD_BYTES * 2)
            except (OSError, TimeoutError) as exc:
                failure = exc
                continue
            exchange.streams.append(connection[1])
            log.info("egress %s allowed: %s (%s)", exchange.caller.machine_id, what, host)
            return connection
        raise Refused(
            f"could not connect to {target.host}:{target.port}: {failure or 'timed out'}", status=502
        )


async def _splice(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    """Both directions until both have ended (a half-close passes on as a half-close)."""
    upstream = asyncio.create_task(pipe(reader, up_writer))
    try:
        await pipe(up_reader, writer)
        await upstream
    finally:
        upstream.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError, ConnectionError):
            await upstream


def _abort_if_failed(task: asyncio.Task[None], writer: asyncio.StreamWriter) -> None:
    if not task.cancelled() and task.exception() is not None:
        writer.close()
