"""The proxy as an ASGI application: resolve an upstream, then forward HTTP or bridge a WebSocket."""

from __future__ import annotations

import http.cookiejar
from collections.abc import Awaitable, Callable

import httpx

from velocity.domain.errors import PreviewError
from velocity.proxy.asgi import Receive, Scope, Send, send_text
from velocity.proxy.http import forward_http
from velocity.proxy.upstream import Upstream
from velocity.proxy.websocket import forward_websocket

Resolver = Callable[[Scope], Awaitable[Upstream]]


def _no_activity() -> None:
    return None


class _RefuseAll(http.cookiejar.DefaultCookiePolicy):
    def set_ok(self, cookie: http.cookiejar.Cookie, request: object) -> bool:
        return False

    def return_ok(self, cookie: http.cookiejar.Cookie, request: object) -> bool:
        return False


def new_client(uds: str | None = None) -> httpx.AsyncClient:
    """An HTTP client fit for proxying: no cookie jar (one user's cookies must never be replayed for
    another), no proxy from the environment, no redirects followed, no pool limit beyond the server's."""
    return httpx.AsyncClient(
        transport=httpx.AsyncHTTPTransport(
            uds=uds, limits=httpx.Limits(max_connections=None, max_keepalive_connections=64)
        ),
        cookies=http.cookiejar.CookieJar(policy=_RefuseAll()),
        trust_env=False,
        follow_redirects=False,
    )


class ReverseProxy:
    """A callable ASGI app for ``http`` and ``websocket`` scopes.

    ``resolve`` picks the upstream of each request; it may wait (the agent holds requests until its dev
    server is ready) and may raise a ``PreviewError``, whose status and message become the answer.
    ``on_activity`` is called for each request and each WebSocket frame. ``connect_timeout`` bounds the
    TCP connect and the whole WebSocket handshake; ``read_timeout`` bounds each wait for upstream bytes
    (``None``: wait forever). ``trust_forwarded`` keeps the ``X-Forwarded-*`` headers that arrive (set it
    only behind a proxy that rewrites them). An injected ``client`` serves TCP upstreams and stays the
    caller's to close; it must not keep cookies.
    """

    def __init__(
        self,
        resolve: Resolver,
        *,
        on_activity: Callable[[], None] | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float | None = 300.0,
        trust_forwarded: bool = False,
        max_message_size: int = 16 * 1024 * 1024,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._resolve = resolve
        self._on_activity = on_activity or _no_activity
        self._connect_timeout = connect_timeout
        self._timeout = httpx.Timeout(
            connect=connect_timeout, read=read_timeout, write=read_timeout, pool=None
        )
        self._trust_forwarded = trust_forwarded
        self._max_message_size = max_message_size
        self._owns_tcp = client is None
        self._tcp = client or new_client()
        self._uds: dict[str, httpx.AsyncClient] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        try:
            upstream = await self._resolve(scope)
        except PreviewError as exc:
            await self._answer_error(scope, send, exc.status_code, exc.message)
            return
        if kind == "http":
            await forward_http(
                scope,
                receive,
                send,
                upstream=upstream,
                client=self._client_for(upstream),
                timeouts=self._timeout,
                trust_forwarded=self._trust_forwarded,
                on_activity=self._on_activity,
            )
        elif kind == "websocket":
            await forward_websocket(
                scope,
                receive,
                send,
                upstream=upstream,
                trust_forwarded=self._trust_forwarded,
                open_timeout=self._connect_timeout,
                max_size=self._max_message_size,
                on_activity=self._on_activity,
            )

    def _client_for(self, upstream: Upstream) -> httpx.AsyncClient:
        if upstream.uds is None:
            return self._tcp
        # A unix socket is part of the transport, not of the URL, hence one client per socket path.
        client = self._uds.get(upstream.uds)
        if client is None:
            client = self._uds[upstream.uds] = new_client(upstream.uds)
        return client

    async def release(self, uds: str) -> None:
        """Close the pooled connections to a unix socket whose server is gone (a destroyed preview)."""
        client = self._uds.pop(uds, None)
        if client is not None:
            await client.aclose()

    async def aclose(self) -> None:
        clients = list(self._uds.values())
        self._uds.clear()
        if self._owns_tcp:
            clients.append(self._tcp)
        for client in clients:
            await client.aclose()

    async def _answer_error(self, scope: Scope, send: Send, status: int, message: str) -> None:
        text = message if message.endswith("\n") else message + "\n"
        if scope["type"] == "http":
            await send_text(send, status, text)
        elif "websocket.http.response" in scope.get("extensions", {}):
            body = text.encode()
            headers = [(b"content-type", b"text/plain; charset=utf-8")]
            await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1011 if status < 500 else 1014})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return
