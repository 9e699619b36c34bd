"""The agent's HTTP surface: ``/health``, ``/__velocity/logs``, a pooled machine's
``/__velocity/claim``, and the dev server behind everything else.

A plain ASGI callable rather than a framework app: the agent answers its first ``/health`` sooner
without importing one. The reverse proxy (and with it httpx) loads in a thread once the server is up;
requests for the dev server wait for it, and for the dev server to be ready, instead of failing.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from velocity.agent.logs import CAPACITY, LogBuffer
from velocity.agent.state import AgentState, Status
from velocity.domain.agent_contract import ORIGIN_HEADER
from velocity.domain.errors import AgentError, BadRequest, Forbidden, PreviewError

if TYPE_CHECKING:
    from velocity.proxy import ReverseProxy, Upstream

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

HEALTH_PATH = "/health"
LOGS_PATH = "/__velocity/logs"
CLAIM_PATH = "/__velocity/claim"
MAX_CLAIM_BYTES = 16 * 1024
DEFAULT_WAIT_SECONDS = 30.0
MAX_WAIT_SECONDS = 120.0
DEFAULT_TAIL = 200
# How long a request for the app waits for the dev server before getting a 503.
PROXY_WAIT_SECONDS = 30.0


_ORIGIN = ORIGIN_HEADER.encode()

# Takes a claim's body, answers what the agent became (``runtime``, ``claim``).
ClaimHandler = Callable[[bytes], Awaitable[dict[str, Any]]]


async def _refuse_stranger(scope: Scope, send: Send) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": "not from the orchestrator"})
        return
    message = f"requests to this machine come through the orchestrator ({ORIGIN_HEADER} missing or wrong)"
    await _json(send, 403, {"error": "forbidden", "message": message})


class DevServerNotReady(AgentError):
    status_code = 503
    code = "dev_server_not_ready"


def _import_proxy() -> tuple[type[ReverseProxy], type[Upstream]]:
    from velocity.proxy import ReverseProxy, Upstream

    return ReverseProxy, Upstream


class AgentApp:
    """With ``origin_secret``, a request that does not carry it in ``ORIGIN_HEADER`` gets 403 (a
    websocket is refused before it opens), but ``GET /health``, which Fly's checks call; the header
    never reaches the dev server."""

    def __init__(self, status: Status, logs: LogBuffer, *, origin_secret: str | None = None) -> None:
        self._origin_secret = origin_secret.encode() if origin_secret else None
        self._status = status
        self._logs = logs
        self._proxy: ReverseProxy | None = None
        self._upstream_class: type[Upstream] | None = None
        self._upstream: Upstream | None = None
        self._proxy_loaded = asyncio.Event()
        self._claim: ClaimHandler | None = None

    def on_claim(self, handler: ClaimHandler) -> None:
        """Accept ``POST /__velocity/claim`` (a pooled machine) with ``handler``."""
        self._claim = handler

    def set_origin_secret(self, secret: str) -> None:
        """From now on only ``secret`` opens the agent (a claimed machine: the preview's)."""
        self._origin_secret = secret.encode()

    async def load_proxy(self) -> None:
        """Import the proxy off the event loop; until then requests for the app wait."""
        began = time.monotonic()
        try:
            proxy_class, self._upstream_class = await asyncio.to_thread(_import_proxy)
            # The agent is reached only through the orchestrator's router or Fly's proxy, which set
            # the forwarded headers; they are kept.
            self._proxy = proxy_class(self._resolve, on_activity=self._status.touch, trust_forwarded=True)
            self._logs.agent(f"reverse proxy loaded in {Status.elapsed_ms(began):.0f} ms")
        except Exception as exc:  # a broken image: say so on /health rather than hang every request
            self._logs.agent(f"failed: cannot load the reverse proxy: {exc!r}")
            self._status.fail(f"the agent cannot load its reverse proxy: {exc!r}")
        finally:
            self._proxy_loaded.set()

    async def aclose(self) -> None:
        if self._proxy is not None:
            await self._proxy.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind in ("http", "websocket") and self._origin_secret is not None:
            health = kind == "http" and scope["path"] == HEALTH_PATH and scope["method"] in ("GET", "HEAD")
            if not health and not self._from_orchestrator(scope):
                await _refuse_stranger(scope, send)
                return
            scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k != _ORIGIN]}
        if kind == "http" and scope["path"] == CLAIM_PATH:
            await self._take_claim(scope, receive, send)
            return
        if kind == "http" and scope["path"] in (HEALTH_PATH, LOGS_PATH):
            try:
                await self._own_endpoint(scope, send)
            except BadRequest as exc:
                await _json(send, exc.status_code, {"error": exc.code, "message": exc.message})
            return
        if kind not in ("http", "websocket"):
            return
        await self._proxy_loaded.wait()
        if self._proxy is None:
            if kind == "http":
                await _json(send, 503, {"error": "agent_error", "message": self._status.detail})
            return
        await self._proxy(scope, receive, send)

    async def _take_claim(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            body = {"error": "method_not_allowed", "message": f"{CLAIM_PATH} answers POST only"}
            await _json(send, 405, body, [(b"allow", b"POST")])
            return
        try:
            if self._claim is None:
                raise Forbidden("this machine is not pooled: it serves its own preview and takes no claim")
            if self._origin_secret is None:
                raise Forbidden("a claim needs the orchestrator's origin secret, and this agent has none")
            answer = await self._claim(await _body(receive, MAX_CLAIM_BYTES))
        except PreviewError as exc:
            await _json(send, exc.status_code, {"error": exc.code, "message": exc.message})
            return
        await _json(send, 200, answer)

    def _from_orchestrator(self, scope: Scope) -> bool:
        assert self._origin_secret is not None
        sent = [value for name, value in scope.get("headers", ()) if name == _ORIGIN]
        return len(sent) == 1 and hmac.compare_digest(sent[0], self._origin_secret)

    async def _own_endpoint(self, scope: Scope, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            body = {"error": "method_not_allowed", "message": f"{scope['path']} answers GET only"}
            await _json(send, 405, body, [(b"allow", b"GET, HEAD")])
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if scope["path"] == LOGS_PATH:
            count = _number(query, "tail", DEFAULT_TAIL, 0, CAPACITY, integer=True)
            await _json(send, 200, {"lines": [line.to_json() for line in self._logs.tail(int(count))]})
            return
        wait = query.get("wait", [None])[0]
        if wait is not None:
            try:
                target = AgentState(wait)
            except ValueError:
                states = ", ".join(state.value for state in AgentState)
                raise BadRequest(f"wait must be one of {states}, not {wait[:40]!r}") from None
            within = _number(query, "timeout", DEFAULT_WAIT_SECONDS, 0, MAX_WAIT_SECONDS)
            await self._status.wait_for(lambda status: status.state is target, within)
        failed = self._status.state is AgentState.FAILED
        await _json(send, 503 if failed else 200, self._status.to_json())

    async def _resolve(self, scope: Scope) -> Upstream:
        ready = await self._status.wait_for(
            lambda status: status.state is AgentState.READY, PROXY_WAIT_SECONDS
        )
        port = self._status.dev_server.port
        if not ready or port is None:
            detail = f": {self._status.detail}" if self._status.detail else ""
            raise DevServerNotReady(f"the dev server is not ready (state: {self._status.state}){detail}")
        if self._upstream is None or self._upstream.port != port:
            assert self._upstream_class is not None  # loaded with the proxy
            # Vite answers only to the hosts it knows: 127.0.0.1 always passes its check.
            self._upstream = self._upstream_class(f"http://127.0.0.1:{port}", host_header=f"127.0.0.1:{port}")
        return self._upstream


async def _body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequest("the request ended before its body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BadRequest(f"the body is larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _number(
    query: dict[str, list[str]], name: str, default: float, low: float, high: float, *, integer: bool = False
) -> float:
    raw = query.get(name, [None])[0]
    if raw is None:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        kind = "a whole number" if integer else "a number"
        raise BadRequest(f"{name} must be {kind} from {low:g} to {high:g}, not {raw[:40]!r}")
    return value


async def _json(
    send: Send, status: int, payload: object, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
