"""Bridge one WebSocket: the client is accepted only once the upstream has accepted.

Accepting late keeps the upstream's answer visible: a refusal reaches the client as the upstream's own
status (through the ``websocket.http.response`` extension when the server offers it), and the accepted
subprotocol is the one the upstream chose (Vite's HMR client insists on ``vite-hmr``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from typing import TypeVar

from websockets.asyncio.client import ClientConnection, connect, unix_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.typing import Subprotocol

from velocity.proxy.asgi import Receive, Scope, Send
from velocity.proxy.headers import WEBSOCKET_HANDSHAKE, request_headers
from velocity.proxy.http import target_url
from velocity.proxy.upstream import Upstream

# Codes that may appear in a close frame (RFC 6455 section 7.4); 1005, 1006 and 1015 only describe
# what happened and must never be sent.
_SENDABLE = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})
_MAX_REFUSAL_BODY = 64 * 1024

_HOST = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")

T = TypeVar("T")


def sendable_close_code(code: int | None, *, abnormal: int) -> int:
    """A close code that can be put on the wire: "no status" becomes 1000, "abnormal" becomes ``abnormal``."""
    if code is None or code == 1005:
        return 1000
    if code in _SENDABLE or 3000 <= code <= 4999:
        return code
    return abnormal


async def forward_websocket(
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    upstream: Upstream,
    trust_forwarded: bool,
    open_timeout: float,
    max_size: int,
    on_activity: Callable[[], None],
) -> None:
    if (await receive())["type"] != "websocket.connect":
        return
    on_activity()
    headers = request_headers(scope, upstream, trust_forwarded=trust_forwarded, drop=WEBSOCKET_HANDSHAKE)
    host = headers[0][1].decode("latin-1")
    if not _HOST.fullmatch(host):
        # The URI carries the Host header, so a value with URI syntax in it ("user@host", a path)
        # must not be spliced in; the upstream's own name is sent instead.
        host = upstream.netloc
    extra = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers[1:]]
    # The URI carries the Host header to send; the address to dial is given separately.
    uri = target_url(upstream, scope, websocket=True).replace(upstream.netloc, host, 1)
    offered = [Subprotocol(name) for name in scope.get("subprotocols", [])] or None
    try:
        ws = await _open(upstream, uri, extra, offered, open_timeout=open_timeout, max_size=max_size)
    except InvalidStatus as exc:
        refusal = exc.response
        content_type = refusal.headers.get("Content-Type", "text/plain; charset=utf-8")
        await _refuse(scope, send, refusal.status_code, refusal.body[:_MAX_REFUSAL_BODY], content_type)
        return
    except TimeoutError:
        await _refuse(scope, send, 504, f"Gateway Timeout: {upstream.describe()} did not answer in time.\n")
        return
    except (OSError, WebSocketException) as exc:
        reason = str(exc) or type(exc).__name__
        await _refuse(scope, send, 502, f"Bad Gateway: cannot reach {upstream.describe()} ({reason}).\n")
        return
    try:
        handshake = ws.response.headers.get_all("Set-Cookie") if ws.response is not None else []
        cookies = [(b"set-cookie", value.encode("latin-1")) for value in handshake]
        await send({"type": "websocket.accept", "subprotocol": ws.subprotocol, "headers": cookies})
        await _bridge(receive, send, ws, on_activity)
    finally:
        await ws.close()


async def _open(
    upstream: Upstream,
    uri: str,
    headers: list[tuple[str, str]],
    subprotocols: list[Subprotocol] | None,
    *,
    open_timeout: float,
    max_size: int,
) -> ClientConnection:
    # Loopback or a unix socket: compressing that hop only costs CPU, hence no compression.
    # No pings on that hop: a suspended (frozen) machine would miss them and lose its sockets, and
    # the browser's side is kept alive by the server's own pings.
    if upstream.uds:
        return await unix_connect(
            upstream.uds,
            uri,
            additional_headers=headers,
            subprotocols=subprotocols,
            open_timeout=open_timeout,
            max_size=max_size,
            compression=None,
            user_agent_header=None,
            ping_interval=None,
        )
    return await connect(
        uri,
        host=upstream.host,
        port=upstream.port,
        server_hostname=upstream.host if upstream.secure else None,
        proxy=None,
        additional_headers=headers,
        subprotocols=subprotocols,
        open_timeout=open_timeout,
        max_size=max_size,
        compression=None,
        user_agent_header=None,
        ping_interval=None,
    )


async def _refuse(scope: Scope, send: Send, status: int, body: bytes | str, content_type: str = "") -> None:
    if "websocket.http.response" not in scope.get("extensions", {}):
        # Without the extension the only answer before accepting is a close, which servers turn into 403.
        await send({"type": "websocket.close", "code": 1011 if status < 500 else 1014})
        return
    data = body.encode() if isinstance(body, str) else body
    headers = [(b"content-type", (content_type or "text/plain; charset=utf-8").encode("latin-1"))]
    await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": data})


async def _bridge(
    receive: Receive, send: Send, ws: ClientConnection, on_activity: Callable[[], None]
) -> None:
    """Copy frames both ways until one side closes, then close the other side with the same code."""

    async def from_client() -> tuple[int, str] | None:
        """Returns the client's close code and reason, or None when the upstream went away first."""
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return int(message.get("code", 1000)), str(message.get("reason") or "")
            if message["type"] != "websocket.receive":
                continue
            on_activity()
            data = message.get("bytes")
            try:
                await ws.send(data if data is not None else str(message.get("text") or ""))
            except ConnectionClosed:
                return None

    async def from_upstream() -> bool:
        """Returns True when the upstream closed, False when the client could not be written to."""
        try:
            async for data in ws:
                on_activity()
                key = "text" if isinstance(data, str) else "bytes"
                await send({"type": "websocket.send", key: data})
        except ConnectionClosed:
            pass
        except OSError:
            return False
        return True

    client_side = asyncio.create_task(from_client())
    upstream_side = asyncio.create_task(from_upstream())
    try:
        await asyncio.wait({client_side, upstream_side}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (client_side, upstream_side):
            task.cancel()
        await asyncio.gather(client_side, upstream_side, return_exceptions=True)

    for task in (client_side, upstream_side):
        if task.done() and not task.cancelled() and (exc := task.exception()) is not None:
            raise exc
    client_close = _result(client_side)
    if client_close is not None:
        code, reason = client_close
        await ws.close(sendable_close_code(code, abnormal=1001), reason)
    elif _result(upstream_side) is False:
        await ws.close(1001)
    else:
        await ws.wait_closed()
        code = sendable_close_code(ws.close_code, abnormal=1011)
        with contextlib.suppress(OSError):  # the client may have left at the same moment
            await send({"type": "websocket.close", "code": code, "reason": ws.close_reason or ""})


def _result(task: asyncio.Task[T]) -> T | None:
    if not task.done() or task.cancelled() or task.exception() is not None:
        return None
    return task.result()
