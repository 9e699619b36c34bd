"""An egress proxy on a unix socket in the test's directory, and upstream servers on loopback addresses
(127.0.0.2 allowlisted, 127.0.0.3 not), each recording what reached it."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from velocity.egress import (
    Caller,
    EgressPolicy,
    EgressProxy,
    InternalService,
    Limits,
    PathRule,
    parse_allowlist,
)
from velocity.egress.addresses import IPAddress, parse_address

CALLER = Caller(machine_id="vm-test", project_id="proj-1")
ORCHESTRATOR = "orchestrator.velocity.internal"


@dataclass
class Upstream:
    """A loopback server that answers each request head with ``200`` naming the request line, or echoes
    bytes back (``echo``); ``received`` holds every byte that reached it, ``connections`` counts."""

    host: str
    echo: bool = False
    received: bytearray = field(default_factory=bytearray)
    connections: int = 0
    port: int = 0
    server: asyncio.Server | None = None

    async def start(self) -> Upstream:
        self.server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            if self.echo:
                while data := await reader.read(65536):
                    self.received += data
                    writer.write(data)
                    await writer.drain()
                return
            while data := await reader.read(65536):
                self.received += data
                if b"\r\n\r\n" in self.received:
                    break
            line = bytes(self.received).split(b"\r\n", 1)[0]
            if b"Upgrade: websocket" in self.received:
                writer.write(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
                )
                while data := await reader.read(65536):
                    self.received += data
                    writer.write(data)
                    await writer.drain()
                return
            body = b"saw " + line
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nKeep-Alive: timeout=5\r\n\r\n%s"
                % (len(body), body)
            )
            await writer.drain()
            # Keeps reading what else arrives, as a keep-alive server would, until the proxy closes.
            while data := await reader.read(65536):
                self.received += data
        finally:
            writer.close()

    async def aclose(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


class FakeResolver:
    """Names to addresses, as a DNS server the attacker controls would answer; counts lookups."""

    def __init__(self, names: dict[str, Sequence[str]]) -> None:
        self.names = names
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.lookups.append(host)
        if host not in self.names:
            raise OSError(f"no such name: {host}")
        return [a for a in (parse_address(x) for x in self.names[host]) if a is not None]


@dataclass
class Rig:
    proxy: EgressProxy
    socket: Path
    allowed: Upstream
    other: Upstream
    echo: Upstream
    resolver: FakeResolver

    async def exchange(self, raw: bytes) -> bytes:
        """Send raw bytes to the proxy as the sandbox would, half-close, return everything it answers."""
        reader, writer = await asyncio.open_unix_connection(str(self.socket))
        writer.write(raw)
        await writer.drain()
        writer.write_eof()
        try:
            async with asyncio.timeout(10):
                return await reader.read(-1)
        finally:
            writer.close()

    async def open(self, raw: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_unix_connection(str(self.socket))
        writer.write(raw)
        await writer.drain()
        return reader, writer


def policy_for(
    allowed: Upstream, echo: Upstream, orchestrator: Upstream, extra: Sequence[str] = ()
) -> EgressPolicy:
    rules = (
        PathRule(frozenset({"GET", "HEAD"}), r"/v1/projects/{project}/snapshot"),
        PathRule(frozenset({"GET", "POST"}), r"/realtime/v1/[A-Za-z0-9_./-]*"),
    )
    return EgressPolicy(
        allowlist=parse_allowlist(
            [f"127.0.0.2:{allowed.port}", f"127.0.0.2:{echo.port}", "rebind.test", "metadata.test", *extra]
        ),
        internal=(InternalService(ORCHESTRATOR, ("127.0.0.2", orchestrator.port), rules),),
    )


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    allowed = await Upstream("127.0.0.2").start()
    other = await Upstream("127.0.0.3").start()
    echo = await Upstream("127.0.0.2", echo=True).start()
    resolver = FakeResolver({"rebind.test": ["127.0.0.3"], "metadata.test": ["169.254.169.254"]})
    proxy = EgressProxy(
        policy_for(allowed, echo, allowed),
        resolver=resolver,
        limits=Limits(head_seconds=0.5, connections_per_caller=4),
    )
    directory = Path(tempfile.mkdtemp(prefix="vp-eg-"))
    socket = directory / "proxy.sock"
    await proxy.listen_unix(socket, CALLER)
    try:
        yield Rig(proxy, socket, allowed, other, echo, resolver)
    finally:
        await proxy.aclose()
        for upstream in (allowed, other, echo):
            await upstream.aclose()
        with contextlib.suppress(OSError):
            directory.rmdir()
