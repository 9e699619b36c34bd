"""The ASGI entry point of the orchestrator: preview hosts to the proxy, everything else to the API."""

from __future__ import annotations

import contextvars
import html
import re

from starlette.types import ASGIApp, Receive, Scope, Send

from velocity.domain import BadRequest, NotFound, PreviewError
from velocity.providers.base import AgentEndpoint
from velocity.proxy import ReverseProxy, Upstream
from velocity.service import PreviewService

# A request for a preview still booting waits this long before it gets a 503.
ROUTE_WAIT_SECONDS = 60.0

_current_preview: contextvars.ContextVar[str] = contextvars.ContextVar("velocity_preview")


def preview_id_from_host(host: str, domain: str) -> str | None:
    """The preview id in ``{id}.{domain}[:port]``, or ``None`` for any other host."""
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.lower().rstrip(".")
    suffix = "." + domain
    if not name.endswith(suffix):
        return None
    return name[: -len(suffix)]


class PreviewRouter:
    def __init__(self, api: ASGIApp, *, service: PreviewService, domain: str) -> None:
        self._api = api
        self._service = service
        self._domain = domain
        self._proxy = ReverseProxy(self._resolve, on_activity=self._activity, read_timeout=None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            preview_id = preview_id_from_host(_host(scope), self._domain)
            if preview_id is not None:
                await self._route(preview_id, scope, receive, send)
                return
        await self._api(scope, receive, send)

    async def _route(self, preview_id: str, scope: Scope, receive: Receive, send: Send) -> None:
        token = _current_preview.set(preview_id)
        try:
            await self._proxy(scope, receive, send)
        except PreviewError as exc:
            await _error_page(scope, send, exc)
        finally:
            _current_preview.reset(token)

    async def _resolve(self, scope: Scope) -> Upstream:
        preview_id = _current_preview.get()
        if not re.fullmatch(r"[a-z0-9]{12}", preview_id):
            raise BadRequest(f"{preview_id!r} is not a preview id")
        try:
            endpoint: AgentEndpoint = await self._service.route(preview_id, wait=ROUTE_WAIT_SECONDS)
        except NotFound as exc:
            exc.message = f"{exc.message}. Create one with POST /v1/previews."
            raise
        self._service.record_activity(preview_id)
        return Upstream(base_url=endpoint.base_url, uds=endpoint.uds, headers=endpoint.headers)

    def _activity(self) -> None:
        preview_id = _current_preview.get(None)
        if preview_id is not None:
            self._service.record_activity(preview_id)

    async def aclose(self) -> None:
        await self._proxy.aclose()


def _host(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"host":
            return str(value.decode("latin-1"))
    return ""


async def _error_page(scope: Scope, send: Send, exc: PreviewError) -> None:
    if scope["type"] != "http":
        await send({"type": "websocket.close", "code": 1011, "reason": exc.message[:120]})
        return
    body = (
        f"<!doctype html><title>Preview unavailable</title><h1>{exc.status_code}</h1>"
        f"<p>{html.escape(exc.message)}</p>"
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": exc.status_code,
            "headers": [(b"content-type", b"text/html; charset=utf-8"), (b"cache-control", b"no-store")],
        }
    )
    await send({"type": "http.response.body", "body": body})
