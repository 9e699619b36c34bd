"""The ASGI entry point of the orchestrator: preview hosts to the proxy, everything else to the API.

On Fly the router does not carry a preview's bytes: after the same checks it answers with a replay
naming the preview's machine (``router/replay.py``), and Fly's proxy replays the request there.
"""

from __future__ import annotations

import contextlib
import contextvars
import html
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from velocity import metrics
from velocity.domain import BadRequest, NotFound, PreviewError, Resuming, Unavailable
from velocity.providers.base import AgentEndpoint
from velocity.proxy import ReverseProxy, Upstream
from velocity.router.gate import Gate
from velocity.router.replay import fly_replay, replay_answer, replayable
from velocity.service import PreviewService

# A request for a preview still booting or resuming waits this long before it gets a 503.
ROUTE_WAIT_SECONDS = 60.0
# A browser opening a preview that is resuming gets a page saying so after this long (which reloads
# itself until the preview serves); other requests are held until it does.
PROGRESS_PAGE_AFTER_SECONDS = 0.3
# The agent's own endpoints, which its machine answers before the app: the orchestrator's to read
# (the owner sees the logs through the API), never anyone's with the preview URL.
AGENT_HEALTH_PATH = "/health"
AGENT_PREFIX = "/__velocity/"

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
    """``{id}.{domain}`` to the preview's agent, anything else to ``api``.

    With ``replay_app`` (the Fly app of the preview machines, set when the orchestrator runs on Fly) a
    preview request is answered with ``fly-replay: app=<replay_app>;instance=<machine id>`` instead.
    """

    def __init__(
        self,
        api: ASGIApp,
        *,
        service: PreviewService,
        domain: str,
        replay_app: str | None = None,
        gate: Gate | None = None,
    ) -> None:
        self._api = api
        self._service = service
        self._domain = domain
        self._replay_app = replay_app
        self._gate = gate
        self._proxy = ReverseProxy(self._resolve, on_activity=self._activity, read_timeout=None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            preview_id = preview_id_from_host(_host(scope), self._domain)
            if preview_id is not None:
                await self._route(preview_id, scope, receive, send)
                return
        await self._api(scope, receive, send)

    async def _route(self, preview_id: str, scope: Scope, receive: Receive, send: Send) -> None:
        kind = str(scope["type"])
        outcome = "proxied"
        receive, send = _counted(receive, send)
        token = _current_preview.set(preview_id)
        if kind == "websocket":
            metrics.ROUTER_WEBSOCKETS.inc()
        try:
            if self._gate is not None:
                if await self._gate.sign_in_if_asked(preview_id, scope, send):
                    return
                admitted = await self._gate.admit(preview_id, scope)
            else:
                admitted = scope
            _refuse_agent_paths(preview_id, scope)
            await self._unless_resuming(preview_id, scope)
            if _has(scope, b"fly-replay-failed"):
                raise Unavailable(
                    f"preview {preview_id}'s machine did not take the request Fly's proxy replayed to it; "
                    "retry shortly"
                )
            if self._replay_app is not None and replayable(scope):
                outcome = "replayed"
                await self._replay(preview_id, self._replay_app, scope, admitted, send)
            else:
                # Locally; and on Fly for a body Fly's proxy cannot replay, over the private network.
                await self._proxy(admitted, receive, send)
        except PreviewError as exc:
            outcome = "refused"
            await _error_page(scope, send, exc)
        finally:
            _current_preview.reset(token)
            metrics.ROUTER_REQUESTS.labels(kind, outcome).inc()
            if kind == "websocket":
                metrics.ROUTER_WEBSOCKETS.dec()

    async def _resolve(self, scope: Scope) -> Upstream:
        endpoint = await self._checked(_current_preview.get())
        return Upstream(base_url=endpoint.base_url, uds=endpoint.uds, headers=endpoint.headers)

    async def _replay(self, preview_id: str, app: str, original: Scope, admitted: Scope, send: Send) -> None:
        await self._checked(preview_id)
        # Ready by now (or _checked raised): this only reads the row, for its machine id.
        preview = await self._service.settled(preview_id, timeout=0)
        if preview.machine_id is None:
            raise Unavailable(f"preview {preview_id} has no machine yet; retry shortly")
        replay = fly_replay(
            app=app,
            machine_id=preview.machine_id,
            original=original,
            admitted=admitted,
            origin_secret=self._service.origin_secret(preview_id),
        )
        await replay_answer(original, send, replay)

    async def _checked(self, preview_id: str) -> AgentEndpoint:
        """The preview's agent, once the id is well formed and the preview serves (resumed, if it
        was suspended); counts as activity."""
        if not re.fullmatch(r"[a-z0-9]{12}", preview_id):
            raise BadRequest(f"{preview_id!r} is not a preview id")
        try:
            endpoint: AgentEndpoint = await self._service.route(preview_id, wait=ROUTE_WAIT_SECONDS)
        except NotFound as exc:
            exc.message = f"{exc.message}. Create one with POST /v1/previews."
            raise
        self._service.record_activity(preview_id)
        return endpoint

    async def _unless_resuming(self, preview_id: str, scope: Scope) -> None:
        """A browser opening a preview that is still resuming after 300 ms gets the progress page
        (``Resuming``); anything else, and any other outcome, is for ``_checked`` to answer."""
        if not _is_navigation(scope):
            return
        with contextlib.suppress(PreviewError):
            await self._service.route(preview_id, wait=PROGRESS_PAGE_AFTER_SECONDS)
        if self._service.resuming(preview_id):
            raise Resuming(f"preview {preview_id} is resuming", delay=1.0)

    def _activity(self) -> None:
        preview_id = _current_preview.get(None)
        if preview_id is not None:
            self._service.record_activity(preview_id)

    async def aclose(self) -> None:
        await self._proxy.aclose()


def _refuse_agent_paths(preview_id: str, scope: Scope) -> None:
    path = str(scope.get("path", "/"))
    if path == AGENT_HEALTH_PATH or path.startswith(AGENT_PREFIX):
        raise NotFound(
            f"{path} is the preview machine's own endpoint, not served on the preview URL: its owner "
            f"reads the logs with GET /v1/previews/{preview_id}/logs and the state with "
            f"GET /v1/previews/{preview_id}"
        )


def _counted(receive: Receive, send: Send) -> tuple[Receive, Send]:
    """``receive`` and ``send`` counting the bytes of bodies and frames each way."""
    to_preview = metrics.ROUTER_BYTES.labels("to_preview")
    from_preview = metrics.ROUTER_BYTES.labels("from_preview")

    async def counted_receive() -> Message:
        message = await receive()
        to_preview.inc(_size(message))
        return message

    async def counted_send(message: Message) -> None:
        from_preview.inc(_size(message))
        await send(message)

    return counted_receive, counted_send


def _size(message: Message) -> int:
    data = message.get("body") or message.get("bytes") or message.get("text") or b""
    return len(data) if isinstance(data, bytes | str) else 0


def _has(scope: Scope, wanted: bytes) -> bool:
    return any(name == wanted for name, _ in scope.get("headers", ()))


def _host(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"host":
            return str(value.decode("latin-1"))
    return ""


def _is_navigation(scope: Scope) -> bool:
    """A browser opening the page (not a script's fetch, an asset, a websocket)."""
    if scope["type"] != "http" or scope.get("method") != "GET":
        return False
    headers = dict(scope.get("headers", ()))
    mode = headers.get(b"sec-fetch-mode")
    return mode == b"navigate" if mode is not None else b"text/html" in headers.get(b"accept", b"")


async def _error_page(scope: Scope, send: Send, exc: PreviewError) -> None:
    if scope["type"] != "http":
        await send({"type": "websocket.close", "code": 1011, "reason": exc.message[:120]})
        return
    headers = [(b"content-type", b"text/html; charset=utf-8"), (b"cache-control", b"no-store")]
    if isinstance(exc, Resuming):
        # It reloads itself; the reload waits (on this replica's resume) until the preview serves.
        body = (
            b'<!doctype html><meta http-equiv="refresh" content="0"><title>Resuming the preview</title>'
            b"<p>Resuming the preview: it was suspended while nobody looked at it.</p>"
        )
        headers.append((b"retry-after", b"1"))
    else:
        body = (
            f"<!doctype html><title>Preview unavailable</title><h1>{exc.status_code}</h1>"
            f"<p>{html.escape(exc.message)}</p>"
        ).encode()
    await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})
