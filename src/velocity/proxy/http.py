"""Forward one HTTP request and stream the answer back, in both directions chunk by chunk."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import httpx

from velocity.domain.errors import AgentError
from velocity.proxy.asgi import Receive, Scope, Send, send_text
from velocity.proxy.headers import request_headers, response_headers
from velocity.proxy.upstream import Upstream

log = logging.getLogger(__name__)


class _ClientGone(Exception):
    """The client disconnected while its request body was being forwarded."""


def target_url(upstream: Upstream, scope: Scope, *, websocket: bool = False) -> str:
    """The upstream URL for this scope: the raw (still percent-encoded) path and query are kept."""
    raw_path: bytes = scope.get("raw_path") or str(scope.get("path", "/")).encode()
    query: bytes = scope.get("query_string", b"")
    scheme = ("wss" if upstream.secure else "ws") if websocket else ("https" if upstream.secure else "http")
    url = f"{scheme}://{upstream.netloc}{upstream.path_prefix}{raw_path.decode('latin-1')}"
    return f"{url}?{query.decode('latin-1')}" if query else url


def _has_body(scope: Scope) -> bool:
    for name, value in scope.get("headers", []):
        key = name.lower()
        if key == b"transfer-encoding" or (key == b"content-length" and value.strip() not in (b"", b"0")):
            return True
    return False


async def forward_http(
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    upstream: Upstream,
    client: httpx.AsyncClient,
    timeouts: httpx.Timeout,
    trust_forwarded: bool,
    on_activity: Callable[[], None],
) -> None:
    on_activity()
    body_done = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _ClientGone
                chunk: bytes = message.get("body", b"")
                if chunk:
                    yield chunk
                if not message.get("more_body", False):
                    return
        finally:
            body_done.set()

    streamed = _has_body(scope)
    if not streamed:
        body_done.set()
    request = httpx.Request(
        scope["method"],
        target_url(upstream, scope),
        headers=request_headers(scope, upstream, trust_forwarded=trust_forwarded),
        content=body() if streamed else None,
        extensions={"timeout": timeouts.as_dict()},
    )
    try:
        try:
            response = await client.send(request, stream=True)
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            # A kept-alive connection the dev server closed as this request went out (Node.js
            # closes idle ones after 5 s): a request without a body is sent once more, on a new one.
            if streamed:
                raise
            log.debug("resending %s %s after %s", scope["method"], scope["path"], _reason(exc))
            response = await client.send(request, stream=True)
    except _ClientGone:
        return
    except httpx.TimeoutException:
        await send_text(send, 504, f"Gateway Timeout: {upstream.describe()} did not answer in time.\n")
        return
    except httpx.TransportError as exc:
        await send_text(send, 502, f"Bad Gateway: cannot reach {upstream.describe()} ({_reason(exc)}).\n")
        return

    try:
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": response_headers(response.headers.raw),
            }
        )
        await _stream_back(response, receive, send, body_done, upstream)
    finally:
        await response.aclose()


async def _stream_back(
    response: httpx.Response, receive: Receive, send: Send, body_done: asyncio.Event, upstream: Upstream
) -> None:
    """Copy the body while watching for the client leaving, which would otherwise go unnoticed for an
    endless stream (server-sent events): ASGI servers drop writes to a closed connection silently."""

    async def copy() -> None:
        try:
            # Raw bytes: a compressed body stays compressed and keeps matching its Content-Length.
            async for chunk in response.aiter_raw():
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except httpx.TransportError as exc:
            # Headers are gone already; failing loudly makes the server cut the connection, which is
            # how a client learns that a body is truncated.
            raise AgentError(f"{upstream.describe()} broke off its response: {_reason(exc)}") from exc
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def watch() -> None:
        await body_done.wait()
        while (await receive())["type"] != "http.disconnect":
            pass

    copier = asyncio.create_task(copy())
    watcher = asyncio.create_task(watch())
    try:
        await asyncio.wait({copier, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (copier, watcher):
            task.cancel()
        await asyncio.gather(copier, watcher, return_exceptions=True)
    if copier.done() and not copier.cancelled() and (exc := copier.exception()) is not None:
        raise exc


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."
