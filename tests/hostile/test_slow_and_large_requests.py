"""Oversized and slow requests to a real server (loopback): the API and the router answer or cut them
off within the connection limits, and other clients are served all the while."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.hostile.archives import entry_bomb
from velocity.server import ConnectionLimits, running
from velocity.settings import Settings

# Short limits, so each attack is cut off within a second or two.
LIMITS = ConnectionLimits(
    head_timeout=1.0,
    body_idle_timeout=1.0,
    body_grace=1.0,
    body_min_rate=4096,
    linger=0.5,
    linger_bytes=4 << 20,
)
PREVIEW = "abcdefabcdef.preview.localhost"  # a preview host: the router answers it, not the API
ATTACKERS = 40
# A normal request during an attack: the median of five within QUICK s, none past STALL s (a server that
# served no one until the attackers were cut off would take the whole 1 s timeout).
QUICK = 0.25
STALL = 0.9


@dataclass
class Server:
    port: int
    token: str

    def head(self, request_line: str, *headers: str, host: str = "127.0.0.1", auth: bool = True) -> bytes:
        lines = [request_line + " HTTP/1.1", f"host: {host}", *headers]
        if auth:
            lines.append(f"authorization: Bearer {self.token}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    settings = Settings(
        velocity_data_dir=tmp_path,
        velocity_port=0,
        max_request_body_bytes=64 * 1024,
        max_project_bytes=256 * 1024,
        _env_file=None,  # type: ignore[call-arg]
    )
    async with running(settings, limits=LIMITS) as orchestrator:
        yield Server(orchestrator.settings.velocity_port, orchestrator.runtime.issuer.mint_user("mallory"))


async def status_of(reader: asyncio.StreamReader) -> int:
    """The status code of the answer on ``reader`` (its head only)."""
    head = await reader.readuntil(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1])


async def until_closed(reader: asyncio.StreamReader) -> None:
    """Read (and drop) until the server closes the connection."""
    try:
        while await reader.read(65536):
            pass
    except ConnectionResetError:
        pass


async def push_until_reset(writer: asyncio.StreamWriter, chunk: bytes, most: int) -> int:
    """Write ``chunk`` after ``chunk`` until the server resets the connection; how much got in."""
    pushed = 0
    try:
        while pushed < most:
            writer.write(chunk)
            await asyncio.wait_for(writer.drain(), 5)
            pushed += len(chunk)
    except (ConnectionResetError, BrokenPipeError):
        return pushed
    raise AssertionError(f"the server read all {most} bytes")


async def latencies(port: int, *, times: int = 5) -> list[float]:
    """How long each of ``times`` fresh requests for /healthz took, each on its own connection
    (connecting and closing counted: the server shares this process's event loop, so a stall shows
    anywhere)."""
    took = []
    for _ in range(times):
        start = time.monotonic()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            response = await client.get("/healthz")
        took.append(time.monotonic() - start)
        assert response.status_code == 200
    return took


def assert_quick(took: list[float]) -> None:
    assert statistics.median(took) < QUICK and max(took) < STALL, took


@pytest.mark.parametrize(
    ("request_line", "host", "framing", "expected"),
    [
        ("POST /v1/previews", "127.0.0.1", "content-length", 413),
        ("PUT /v1/projects/big", "127.0.0.1", "content-length", 413),
        ("POST /v1/previews", "127.0.0.1", "chunked", 413),
        ("POST /upload", PREVIEW, "content-length", 404),
    ],
    ids=["api-declared", "project-declared", "api-chunked", "router-declared"],
)
async def test_a_body_over_the_limit_is_answered_and_dropped_without_being_read(
    server: Server, request_line: str, host: str, framing: str, expected: int
) -> None:
    """The answer comes before the body; the server then drops a little of it and closes."""
    declared = 1 << 30
    framing_header = (
        f"content-length: {declared}" if framing == "content-length" else "transfer-encoding: chunked"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(server.head(request_line, framing_header, host=host))
    chunk = b"\0" * 65536
    if framing == "chunked":  # this body's size shows only as it streams in: send past the limit
        chunk = b"10000\r\n" + chunk + b"\r\n"
        writer.write(chunk * 2)
    assert await asyncio.wait_for(status_of(reader), 5) == expected
    start = time.monotonic()
    pushed = await push_until_reset(writer, chunk, declared)
    # What the client got in before the reset: the linger allowance plus the two kernels' buffers.
    assert pushed < 64 << 20
    assert time.monotonic() - start < LIMITS.linger + 2
    writer.close()


async def test_after_an_early_413_the_connection_serves_the_next_request(server: Server) -> None:
    """A client that sends the whole (too large) body before reading gets the 413, then keeps going."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as client:
        auth = {"authorization": f"Bearer {server.token}"}
        refused = await client.post("/v1/previews", content=b"\0" * (1 << 20), headers=auth)
        assert refused.status_code == 413
        assert refused.json()["error"]["code"] == "payload_too_large"
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/v1/previews", headers=auth)).status_code == 200


async def test_an_upload_slow_to_check_does_not_hold_up_other_requests(server: Server) -> None:
    """An archive of many entries is checked off the event loop: /healthz answers meanwhile."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=30) as client:
        headers = {"authorization": f"Bearer {server.token}", "content-type": "application/gzip"}
        upload = asyncio.create_task(
            client.put("/v1/projects/many", content=entry_bomb(19_000), headers=headers)
        )
        took = await latencies(server.port)
        assert not upload.done(), "the upload was checked before the other requests"
        assert (await upload).status_code == 200
    assert_quick(took)


async def trickle(server: Server, first: bytes, more: bytes, started: asyncio.Event) -> tuple[int, float]:
    """Send ``first``, then ``more`` every 50 ms, until the server answers and closes; the answer's
    status and how long the connection lasted."""
    start = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(first)
    await writer.drain()
    started.set()
    answered = asyncio.create_task(status_of(reader))
    try:
        async with asyncio.timeout(10):  # a server without the limits would take this forever
            while not answered.done():
                writer.write(more)
                # The attack's own pace, one small write at a time; the answer ends it.
                await asyncio.wait({answered}, timeout=0.05)
            status = await answered
            await until_closed(reader)
    finally:
        answered.cancel()
        writer.close()
    return status, time.monotonic() - start


async def attack(server: Server, first: bytes, more: bytes) -> tuple[list[tuple[int, float]], list[float]]:
    """ATTACKERS trickling connections at once; their outcomes, and how long normal requests took
    while they were all connected."""
    events = [asyncio.Event() for _ in range(ATTACKERS)]
    attackers = [asyncio.create_task(trickle(server, first, more, event)) for event in events]
    await asyncio.gather(*(event.wait() for event in events))
    took = await latencies(server.port)
    assert not any(task.done() for task in attackers), "the attack ended before the normal requests"
    return await asyncio.gather(*attackers), took


async def test_heads_that_never_end_are_cut_off_with_408_while_others_are_served(server: Server) -> None:
    """Slowloris: heads trickling a header line at a time get 408 after the head timeout."""
    outcomes, took = await attack(server, b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n", b"x-a: b\r\n")
    assert_quick(took)
    assert {status for status, _ in outcomes} == {408}
    assert max(lasted for _, lasted in outcomes) < LIMITS.head_timeout + 1


@pytest.mark.parametrize("pace", ["trickles", "stalls"])
async def test_bodies_that_trickle_or_stall_are_cut_off_with_408_while_others_are_served(
    server: Server, pace: str
) -> None:
    """A body read by the API that comes a byte at a time, or stops, gets 408 after the body timeouts."""
    head = server.head("PUT /v1/projects/slow", "content-type: application/gzip", "content-length: 100000")
    outcomes, took = await attack(server, head + b"\x1f\x8b", b"\0" if pace == "trickles" else b"")
    assert_quick(took)
    assert {status for status, _ in outcomes} == {408}
    assert max(lasted for _, lasted in outcomes) < LIMITS.body_grace + LIMITS.body_idle_timeout + 1


async def test_a_trickled_body_to_a_preview_host_is_answered_and_closed(server: Server) -> None:
    """The router answers a request for a preview that does not exist without its body, then closes."""
    head = server.head("POST /upload", "content-length: 100000", host=PREVIEW, auth=False)
    outcomes, took = await attack(server, head, b"\0")
    assert_quick(took)
    assert {status for status, _ in outcomes} == {404}
    assert max(lasted for _, lasted in outcomes) < LIMITS.linger + 1


async def test_a_connection_that_sends_nothing_is_closed_after_the_head_timeout(server: Server) -> None:
    """No request at all: the connection is closed, silently, once the head timeout has passed."""
    start = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        assert await asyncio.wait_for(reader.read(), LIMITS.head_timeout + 5) == b""
    finally:
        writer.close()
    assert LIMITS.head_timeout - 0.1 < time.monotonic() - start < LIMITS.head_timeout + 1


@pytest.mark.parametrize(
    ("request_line", "headers", "host"),
    [
        ("GET /healthz", ["x-big: " + "a" * (1 << 20)], "127.0.0.1"),
        ("GET /healthz", ["x-a: b"] * 100_000, "127.0.0.1"),
        ("GET /" + "a" * (1 << 20), [], "127.0.0.1"),
        ("GET /", ["cookie: " + "c=" * (1 << 19)], PREVIEW),
    ],
    ids=["one-huge-header", "many-headers", "huge-url", "huge-cookie-to-a-preview"],
)
async def test_a_huge_head_gets_431_or_400_and_the_server_carries_on(
    server: Server, request_line: str, headers: list[str], host: str
) -> None:
    """Never a 500 or a hang: the answer comes at once and the connection closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(server.head(request_line, *headers, host=host))
    try:
        status = await asyncio.wait_for(status_of(reader), 5)
        await asyncio.wait_for(until_closed(reader), 5)
    finally:
        writer.close()
    assert status in (400, 431)
    assert_quick(await latencies(server.port, times=1))
