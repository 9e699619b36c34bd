"""The egress proxy over a real unix socket, with upstream servers on loopback addresses."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.egress.conftest import CALLER, ORCHESTRATOR, Rig
from velocity.egress import EgressPolicy, EgressProxy, parse_allowlist


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


async def test_a_plain_http_request_to_a_listed_host_is_forwarded_in_origin_form(rig: Rig) -> None:
    """The server sees its own Host, an origin-form target, no proxy credentials or forwarding claims."""
    port = rig.allowed.port
    answer = await rig.exchange(
        f"GET http://127.0.0.2:{port}/path?q=1 HTTP/1.1\r\nHost: evil.example\r\n"
        "Proxy-Authorization: Basic eA==\r\nX-Forwarded-For: 10.0.0.1\r\nAccept: */*\r\n\r\n".encode()
    )
    assert status(answer) == 200
    assert answer.endswith(b"saw GET /path?q=1 HTTP/1.1")
    assert b"Connection: close" in answer and b"Keep-Alive" not in answer
    seen = bytes(rig.allowed.received)
    assert f"Host: 127.0.0.2:{port}".encode() in seen
    assert b"evil.example" not in seen and b"Proxy-Authorization" not in seen
    assert b"X-Forwarded-For" not in seen and b"Accept: */*" in seen


async def test_a_connect_to_a_listed_host_tunnels_bytes_both_ways(rig: Rig) -> None:
    """CONNECT host:port answers 200, then carries whatever the client sends (TLS, in real life)."""
    reader, writer = await rig.open(f"CONNECT 127.0.0.2:{rig.echo.port} HTTP/1.1\r\n\r\n".encode())
    try:
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 200 Connection established\r\n\r\n"
        writer.write(b"\x16\x03\x01 hello through the tunnel")
        await writer.drain()
        assert await reader.readexactly(28) == b"\x16\x03\x01 hello through the tunnel"
    finally:
        writer.close()


@pytest.mark.parametrize("kind", ["plain", "connect"])
async def test_a_host_off_the_allowlist_gets_a_403_and_no_connection(rig: Rig, kind: str) -> None:
    """127.0.0.3 is not listed: a 403 naming it and the setting; the server there never hears a byte."""
    port = rig.other.port
    request = (
        f"GET http://127.0.0.3:{port}/ HTTP/1.1\r\n\r\n"
        if kind == "plain"
        else f"CONNECT 127.0.0.3:{port} HTTP/1.1\r\n\r\n"
    )
    answer = await rig.exchange(request.encode())
    assert status(answer) == 403
    assert f"127.0.0.3:{port} is not on the egress allowlist".encode() in answer
    assert b"PREVIEW_EGRESS_ALLOWLIST" in answer
    assert rig.other.connections == 0


@pytest.mark.parametrize(
    ("name", "address"), [("rebind.test", "127.0.0.3"), ("metadata.test", "169.254.169.254")]
)
async def test_a_listed_name_resolving_to_an_internal_address_is_refused_before_dialling(
    rig: Rig, name: str, address: str
) -> None:
    """DNS rebinding to loopback or the metadata address: 403 naming the address; nothing is dialled."""
    answer = await rig.exchange(f"CONNECT {name}:443 HTTP/1.1\r\n\r\n".encode())
    assert status(answer) == 403
    assert f"{name} resolves to {address}".encode() in answer
    assert rig.resolver.lookups == [name]
    assert rig.other.connections == 0


async def test_a_preview_fetches_its_own_snapshot_through_the_orchestrator_name(rig: Rig) -> None:
    """GET of the caller's own snapshot on the proxy-only name reaches the orchestrator's address."""
    answer = await rig.exchange(
        f"GET http://{ORCHESTRATOR}/v1/projects/{CALLER.project_id}/snapshot HTTP/1.1\r\n"
        f"Host: {ORCHESTRATOR}\r\nAuthorization: Bearer t\r\n\r\n".encode()
    )
    assert status(answer) == 200
    assert b"Authorization: Bearer t" in rig.allowed.received


@pytest.mark.parametrize(
    "path",
    ["/v1/projects/proj-2/snapshot", "/v1/previews", "/realtime/v1/../../v1/previews", "/v1/projects/proj-1"],
)
async def test_the_orchestrator_name_refuses_every_other_path(rig: Rig, path: str) -> None:
    """Another project's snapshot, the API, a traversal: 403, and the orchestrator hears nothing."""
    answer = await rig.exchange(f"GET http://{ORCHESTRATOR}{path} HTTP/1.1\r\n\r\n".encode())
    assert status(answer) == 403
    assert rig.allowed.connections == 0


async def test_the_orchestrator_hears_which_project_calls_and_nobody_can_claim_another(rig: Rig) -> None:
    """A request to the orchestrator name carries the calling preview's project in the proxy's own
    header; a copy the client sent is dropped. An allowlisted host never gets the header."""
    own = f"/v1/projects/{CALLER.project_id}/snapshot"
    forged = "X-Velocity-Egress-Project: someone-else\r\nx-velocity-egress-project: other\r\n"
    assert (
        status(await rig.exchange(f"GET http://{ORCHESTRATOR}{own} HTTP/1.1\r\n{forged}\r\n".encode())) == 200
    )
    head = bytes(rig.allowed.received).split(b"\r\n\r\n", 1)[0].lower()
    assert head.count(b"x-velocity-egress-project") == 1
    assert f"x-velocity-egress-project: {CALLER.project_id}".encode() in head
    rig.allowed.received.clear()
    listed = f"GET http://127.0.0.2:{rig.allowed.port}/ HTTP/1.1\r\n{forged}\r\n"
    assert status(await rig.exchange(listed.encode())) == 200
    assert b"x-velocity-egress-project" not in bytes(rig.allowed.received).lower()


async def test_a_second_request_on_an_allowed_connection_never_reaches_the_server(rig: Rig) -> None:
    """Request smuggling by pipelining: the proxy forwards one request per connection, then closes."""
    own = f"/v1/projects/{CALLER.project_id}/snapshot"
    answer = await rig.exchange(
        f"GET http://{ORCHESTRATOR}{own} HTTP/1.1\r\n\r\nGET /v1/previews HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    )
    assert status(answer) == 200
    assert answer.count(b"\r\n\r\n") == 1  # one response head
    assert b"/v1/previews" not in rig.allowed.received


async def test_a_request_with_two_body_lengths_is_refused(rig: Rig) -> None:
    """Content-Length with Transfer-Encoding is the smuggling shape: 400, nothing forwarded."""
    answer = await rig.exchange(
        f"POST http://127.0.0.2:{rig.allowed.port}/ HTTP/1.1\r\nContent-Length: 4\r\n"
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n".encode()
    )
    assert status(answer) == 400
    assert rig.allowed.connections == 0


@pytest.mark.parametrize(
    "framing",
    [
        "Content-Length: 4\r\nContent-Length: 40",
        "Content-Length: 4\r\nContent-Length: 4",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity",
        "X-Note: a\nContent-Length: 40\r\nContent-Length: 4",
        "X-Note: a\nTransfer-Encoding: chunked\r\nContent-Length: 4",
        "X-Note: a\rb\r\nContent-Length: 4",
    ],
    ids=["two lengths", "a repeated length", "two codings", "bare LF", "bare LF coding", "bare CR"],
)
async def test_an_ambiguous_head_is_refused(rig: Rig, framing: str) -> None:
    """Repeated framing headers and bare CR or LF inside a header line read differently on different
    servers (the smuggling shapes): 400, nothing forwarded."""
    answer = await rig.exchange(
        f"POST http://127.0.0.2:{rig.allowed.port}/ HTTP/1.1\r\n{framing}\r\n\r\n0\r\n\r\n".encode()
    )
    assert status(answer) == 400, answer
    assert rig.allowed.connections == 0


async def test_a_chunked_body_is_carried_whole_and_nothing_after_it(rig: Rig) -> None:
    """The body goes on by its own framing; bytes after its last chunk are not the server's."""
    answer = await rig.exchange(
        f"POST http://127.0.0.2:{rig.allowed.port}/u HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        "5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n".encode()
    )
    assert status(answer) == 200
    assert rig.allowed.received.endswith(b"5\r\nhello\r\n0\r\n\r\n")


@pytest.mark.parametrize(
    ("request_line", "code"),
    [
        (b"GET / HTTP/1.1\r\nHost: 127.0.0.2\r\n\r\n", 400),
        (b"GET https://127.0.0.2/ HTTP/1.1\r\n\r\n", 400),
        (b"GET http://user:pw@127.0.0.2/ HTTP/1.1\r\n\r\n", 400),
        (b"CONNECT 127.0.0.2 HTTP/1.1\r\n\r\n", 400),
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
        (b"GET http://127.0.0.2/ HTTP/1.1\r\n" + b"X-Big: " + b"a" * 40_000 + b"\r\n\r\n", 431),
    ],
)
async def test_requests_that_are_not_proxy_requests_get_a_clear_4xx(
    rig: Rig, request_line: bytes, code: int
) -> None:
    """Origin-form, https:// without CONNECT, credentials in the URI, garbage, huge heads: 4xx."""
    answer = await rig.exchange(request_line)
    assert status(answer) == code
    assert b"velocity egress proxy:" in answer


async def test_a_websocket_upgrade_to_realtime_becomes_a_tunnel(rig: Rig) -> None:
    """Realtime's websocket: the 101 passes, then frames flow both ways."""
    reader, writer = await rig.open(
        f"GET http://{ORCHESTRATOR}/realtime/v1/websocket?vsn=1.0.0 HTTP/1.1\r\nHost: {ORCHESTRATOR}\r\n"
        "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101")
        writer.write(b"frame")
        await writer.drain()
        assert await reader.readexactly(5) == b"frame"
    finally:
        writer.close()
    assert b"Upgrade: websocket" in rig.allowed.received


async def test_a_client_that_sends_no_head_is_dropped_after_the_head_timeout(rig: Rig) -> None:
    """A slowloris against the proxy: the connection ends without an answer."""
    reader, writer = await rig.open(b"GET http://127.0.0.2/")
    try:
        async with asyncio.timeout(5):
            assert await reader.read(-1) == b""
    finally:
        writer.close()


async def test_a_preview_holding_too_many_connections_gets_a_503(rig: Rig) -> None:
    """Past the per-preview limit a connection is answered 503 and closed, so one preview cannot
    exhaust the orchestrator's file descriptors."""
    held = [await rig.open(f"CONNECT 127.0.0.2:{rig.echo.port} HTTP/1.1\r\n\r\n".encode()) for _ in range(4)]
    try:
        for reader, _ in held:
            await reader.readuntil(b"\r\n\r\n")
        answer = await rig.exchange(f"CONNECT 127.0.0.2:{rig.echo.port} HTTP/1.1\r\n\r\n".encode())
        assert status(answer) == 503
    finally:
        for _, writer in held:
            writer.close()


async def test_closing_a_listener_ends_its_open_tunnels(rig: Rig) -> None:
    """Destroying a machine closes its listener and every tunnel through it."""
    reader, writer = await rig.open(f"CONNECT 127.0.0.2:{rig.echo.port} HTTP/1.1\r\n\r\n".encode())
    await reader.readuntil(b"\r\n\r\n")
    await rig.proxy.close_listener(CALLER.machine_id)
    async with asyncio.timeout(5):
        assert await reader.read(-1) == b""
    writer.close()
    assert not rig.socket.exists()


async def test_decisions_are_logged_with_the_calling_machine(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """Each allowed destination is an info line, each refusal a warning, both naming the machine."""
    caplog.set_level(logging.INFO, logger="velocity.egress")
    await rig.exchange(f"GET http://127.0.0.2:{rig.allowed.port}/ HTTP/1.1\r\n\r\n".encode())
    await rig.exchange(b"CONNECT 169.254.169.254:80 HTTP/1.1\r\n\r\n")
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert (
        logging.INFO,
        f"egress vm-test allowed: GET http://127.0.0.2:{rig.allowed.port}/ (127.0.0.2)",
    ) in messages
    assert any(
        level == logging.WARNING and "vm-test refused: 169.254.169.254:80" in m for level, m in messages
    )


async def test_the_system_resolver_is_used_and_localhost_is_refused_as_loopback(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """With the host's own resolver a listed ``localhost`` resolves to loopback and is refused."""
    import tempfile
    from pathlib import Path

    proxy = EgressProxy(EgressPolicy(allowlist=parse_allowlist(["localhost:9"])))
    directory = Path(tempfile.mkdtemp(prefix="vp-eg-"))
    try:
        await proxy.listen_unix(directory / "p.sock", CALLER)
        reader, writer = await asyncio.open_unix_connection(str(directory / "p.sock"))
        writer.write(b"CONNECT localhost:9 HTTP/1.1\r\n\r\n")
        answer = await reader.read(-1)
        writer.close()
        assert status(answer) == 403
        assert b"localhost resolves to 127.0.0.1, a loopback address" in answer
    finally:
        await proxy.aclose()
        directory.rmdir()


@pytest.mark.parametrize(
    ("inner", "code"),
    [
        (f"/v1/projects/{CALLER.project_id}/snapshot", 200),
        ("/v1/previews", 403),
        ("/v1/projects/proj-2/snapshot", 403),
    ],
)
async def test_a_tunnel_to_the_orchestrator_name_checks_the_request_inside_it(
    rig: Rig, inner: str, code: int
) -> None:
    """CONNECT orchestrator:80 (as websocket clients do) gets its inner request checked by path."""
    answer = await rig.exchange(
        f"CONNECT {ORCHESTRATOR}:80 HTTP/1.1\r\n\r\nGET {inner} HTTP/1.1\r\nHost: {ORCHESTRATOR}\r\n\r\n".encode()
    )
    assert answer.startswith(b"HTTP/1.1 200 Connection established\r\n\r\n")
    assert status(answer.split(b"\r\n\r\n", 1)[1]) == code
    assert (rig.allowed.connections == 1) == (code == 200)
