"""The HTTP/1.1 the egress proxy reads and writes: request and response heads, bodies by their framing.

Heads are bounded in size and time; a request carrying both ``Content-Length`` and
``Transfer-Encoding`` is refused (the classic smuggling shape), so the proxy and the server it talks to
always agree where one request ends.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urlsplit

from velocity.egress.policy import Refused

MAX_HEAD_BYTES = 32 * 1024
CHUNK = 64 * 1024
# Dropped between client and server; the proxy sets Connection itself.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "proxy-connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "trailer",
    }
)

# Claims about the client that only a proxy the server trusts may make (the orchestrator trusts its
# loopback, where the egress proxy connects from): a preview's own are dropped.
FORWARDING = frozenset({"forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip"})


@dataclass(frozen=True, slots=True)
class Head:
    """A request line or status line and its headers, names as sent."""

    start: str
    headers: tuple[tuple[str, str], ...]

    def get(self, name: str) -> str | None:
        name = name.lower()
        return next((value for key, value in self.headers if key.lower() == name), None)

    def without(self, names: frozenset[str]) -> tuple[tuple[str, str], ...]:
        return tuple((key, value) for key, value in self.headers if key.lower() not in names)


@dataclass(frozen=True, slots=True)
class ProxyRequest:
    method: str
    host: str
    port: int
    path: str  # without the query
    query: str
    head: Head

    @property
    def is_connect(self) -> bool:
        return self.method == "CONNECT"

    @property
    def wants_upgrade(self) -> bool:
        return (
            self.head.get("upgrade") is not None and "upgrade" in (self.head.get("connection") or "").lower()
        )


async def read_head(reader: asyncio.StreamReader) -> Head | None:
    """The next head, or ``None`` when the peer closed before sending one."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise Refused("the request ended inside its head", status=400) from None
    except asyncio.LimitOverrunError:
        raise Refused(f"the request head is larger than {MAX_HEAD_BYTES} bytes", status=431) from None
    lines = raw.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or any(c in name for c in " \t"):
            raise Refused("a header line is malformed", status=400)
        if any(c in line for c in "\r\n\0"):
            # A bare CR or LF ends a line for some servers and not for others: a smuggled header.
            raise Refused("a header line holds a bare CR, LF or NUL", status=400)
        headers.append((name, value.strip()))
    if any(c in lines[0] for c in "\n\0"):
        raise Refused("the request line holds a bare LF or NUL", status=400)
    for framing in ("content-length", "transfer-encoding"):
        if sum(1 for name, _ in headers if name.lower() == framing) > 1:
            raise Refused(f"the head repeats {framing.title()}: its framing is ambiguous", status=400)
    return Head(lines[0], tuple(headers))


def parse_request(head: Head) -> ProxyRequest:
    """A proxy request: ``CONNECT host:port`` or a method with an absolute ``http://`` URI."""
    parts = head.start.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise Refused("the request line is not HTTP/1.x", status=400)
    method, target, _ = parts
    if not method.isalpha() or not method.isupper():
        raise Refused("the request method is malformed", status=400)
    if method == "CONNECT":
        host, sep, number = target.rpartition(":")
        if not sep or not number.isdigit() or not 0 < int(number) < 65536:
            raise Refused("CONNECT needs host:port", status=400)
        return ProxyRequest(method, host.removeprefix("[").removesuffix("]"), int(number), "", "", head)
    if not target.lower().startswith("http://"):
        raise Refused(
            "this is an egress proxy: send http:// requests with an absolute URI, and CONNECT for https",
            status=400,
        )
    try:
        url = urlsplit(target)
        port = url.port or 80
    except ValueError:
        raise Refused("the request URI is malformed", status=400) from None
    if not url.hostname or url.username is not None or url.password is not None:
        raise Refused("the request URI has no host, or carries credentials", status=400)
    return ProxyRequest(method, url.hostname, port, url.path or "/", url.query, head)


def parse_inner_request(head: Head, host: str, port: int) -> ProxyRequest:
    """The request inside an inspected tunnel: origin-form, for the tunnel's own host and port."""
    parts = head.start.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[1].startswith("/"):
        raise Refused("the request inside the tunnel is not an origin-form HTTP/1.x request", status=400)
    method, target, _ = parts
    if not method.isalpha() or not method.isupper():
        raise Refused("the request method is malformed", status=400)
    path, _, query = target.partition("?")
    return ProxyRequest(method, host, port, path, query, head)


# Set by the proxy on requests to an internal service (the orchestrator), naming the calling preview's
# project; a client's own copy is always dropped. It only ever narrows what the request may do.
CALLER_HEADER = "X-Velocity-Egress-Project"


def origin_head(request: ProxyRequest, *, caller_project: str | None = None) -> bytes:
    """The head sent on to the server: origin-form target, its own Host, one request per connection
    (or the upgrade the client asked for); with ``caller_project``, the ``CALLER_HEADER``."""
    target = request.path + (f"?{request.query}" if request.query else "")
    host = f"[{request.host}]" if ":" in request.host else request.host
    authority = host if request.port == 80 else f"{host}:{request.port}"
    lines = [f"{request.method} {target} HTTP/1.1", f"Host: {authority}"]
    dropped = (
        HOP_BY_HOP
        | FORWARDING
        | {"host", CALLER_HEADER.lower()}
        | (frozenset() if request.wants_upgrade else frozenset({"upgrade"}))
    )
    lines += [f"{name}: {value}" for name, value in request.head.without(dropped)]
    if caller_project is not None:
        lines.append(f"{CALLER_HEADER}: {caller_project}")
    lines.append("Connection: Upgrade" if request.wants_upgrade else "Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def response_head(head: Head, *, upgraded: bool) -> bytes:
    """A server's response head for the client; the proxy closes after it unless the protocol switched."""
    if upgraded:
        lines = [head.start, *(f"{name}: {value}" for name, value in head.headers)]
    else:
        kept = head.without(HOP_BY_HOP)
        lines = [head.start, *(f"{name}: {value}" for name, value in kept), "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def status_of(head: Head) -> int:
    parts = head.start.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise Refused("the server's response is not HTTP", status=502)
    return int(parts[1])


def refusal(status: int, message: str) -> bytes:
    """A complete plain-text answer from the proxy itself."""
    reasons = {400: "Bad Request", 403: "Forbidden", 431: "Request Header Fields Too Large",
               502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}  # fmt: skip
    body = f"velocity egress proxy: {message}\n".encode()
    head = (
        f"HTTP/1.1 {status} {reasons.get(status, 'Error')}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nX-Velocity-Egress: refused\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def body_length(request: ProxyRequest) -> int | None:
    """The request body's length, ``None`` for chunked; checked before anything is sent on."""
    length = request.head.get("content-length")
    coding = request.head.get("transfer-encoding")
    if length is not None and coding is not None:
        raise Refused("the request has both Content-Length and Transfer-Encoding", status=400)
    if coding is not None:
        if coding.lower() != "chunked":
            raise Refused("only chunked transfer coding is supported", status=400)
        return None
    if length is None:
        return 0
    if not length.isdigit():
        raise Refused("Content-Length is not a number", status=400)
    return int(length)


UNTIL_CLOSE = -1


def response_length(head: Head, method: str, status: int) -> int | None:
    """A response body's length: ``None`` for chunked, ``UNTIL_CLOSE`` when only the end of the
    connection ends it. The proxy stops after it, whether or not the server closes."""
    if method == "HEAD" or status in (204, 304):
        return 0
    coding = head.get("transfer-encoding")
    if coding is not None:
        return None if coding.lower() == "chunked" else UNTIL_CLOSE
    length = head.get("content-length")
    return int(length) if length is not None and length.isdigit() else UNTIL_CLOSE


async def relay_body(length: int | None, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy exactly one request body (``length`` bytes, or chunks when ``None``); nothing after it
    reaches the server."""
    if length is None:
        await _relay_chunked(reader, writer)
    elif length == UNTIL_CLOSE:
        await pipe(reader, writer)
    else:
        await _copy_exactly(reader, writer, length)


async def _relay_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        line = await reader.readuntil(b"\r\n")
        size_text = line.split(b";", 1)[0].strip()
        if not size_text or any(c not in b"0123456789abcdefABCDEF" for c in size_text):
            raise ConnectionError("a chunk size is malformed")
        size = int(size_text, 16)
        writer.write(line)
        if size == 0:
            while (trailer := await reader.readuntil(b"\r\n")) != b"\r\n":
                writer.write(trailer)
            writer.write(b"\r\n")
            await writer.drain()
            return
        await _copy_exactly(reader, writer, size + 2)


async def _copy_exactly(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: int) -> None:
    while count:
        data = await reader.read(min(CHUNK, count))
        if not data:
            raise ConnectionError("the request body ended early")
        writer.write(data)
        await writer.drain()
        count -= len(data)


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of stream, then half-close the other side."""
    while data := await reader.read(CHUNK):
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()
