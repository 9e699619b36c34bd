"""Routes for following a preview live: its events as Server-Sent Events, and where its channel is."""

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import Depends, FastAPI, Header, Path
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from velocity.auth import Caller
from velocity.realtime.contract import CONTRACT_VERSION
from velocity.service.events import PreviewEvents, StreamEvent
from velocity.service.previews import PreviewService
from velocity.settings import Settings


class RealtimeOut(BaseModel):
    """Where the preview channels live: what an editor (or ``velocity push``) connects to."""

    url: str  # Supabase Realtime's base, e.g. https://<ref>.supabase.co/realtime/v1
    anon_key: str  # public: it ships in the editor; channels need a user's token on top
    contract: int


def encode(event: StreamEvent | None) -> bytes:
    """One SSE message (``None``: a comment that keeps proxies from closing an idle stream)."""
    if event is None:
        return b": keepalive\n\n"
    head = f"id: {event.id}\n" if event.id is not None else ""
    data = json.dumps(event.data, separators=(",", ":"), ensure_ascii=False)
    return f"{head}event: {event.kind}\ndata: {data}\n\n".encode()


def install(
    app: FastAPI,
    *,
    user: Callable[..., Awaitable[Caller]],
    operator: Callable[..., Awaitable[Caller]],
    previews: PreviewService,
    events: PreviewEvents,
    settings: Settings,
) -> None:
    User = Annotated[Caller, Depends(user)]
    Operator = Annotated[Caller, Depends(operator)]
    PreviewPath = Annotated[str, Path(pattern=r"^[a-z0-9]{12}$", description="a preview id")]

    @app.get(
        "/v1/previews/{preview_id}/events",
        response_class=StreamingResponse,
        tags=["previews"],
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def preview_events(
        preview_id: PreviewPath,
        who: User,
        last_event_id: Annotated[str | None, Header(description="resume after this state event")] = None,
    ) -> StreamingResponse:
        """Server-Sent Events: ``state`` (each state the preview enters, with its store id), and the
        agent's ``status`` and ``log`` messages; the stream ends once the preview has ended."""
        await previews.get(who, preview_id)  # a 404 before the stream starts, not inside it
        after = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0

        async def body() -> AsyncIterator[bytes]:
            async for event in events.stream(who, preview_id, after_id=after):
                yield encode(event)

        headers = {"cache-control": "no-store", "x-accel-buffering": "no"}
        return StreamingResponse(body(), media_type="text/event-stream", headers=headers)

    @app.get(
        "/v1/admin/events",
        response_class=StreamingResponse,
        tags=["admin"],
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def all_events(
        _who: Operator,
        last_event_id: Annotated[str | None, Header(description="resume after this state event")] = None,
    ) -> StreamingResponse:
        """Server-Sent Events: ``state`` for every preview's every change (with ``preview_id``), from
        now on or after ``Last-Event-ID`` (the operators' dashboard, ``/admin``)."""
        after = int(last_event_id) if last_event_id and last_event_id.isdigit() else None

        async def body() -> AsyncIterator[bytes]:
            async for event in events.everything(after_id=after):
                yield encode(event)

        headers = {"cache-control": "no-store", "x-accel-buffering": "no"}
        return StreamingResponse(body(), media_type="text/event-stream", headers=headers)

    @app.get("/v1/realtime", response_model=RealtimeOut, tags=["previews"])
    async def realtime(who: User) -> RealtimeOut:
        """Supabase Realtime's URL and anon key, for editors of preview channels (``preview:{project_id}``)."""
        base: str = (settings.supabase_url or settings.orchestrator_url).rstrip("/")
        key = settings.supabase_anon_key.get_secret_value() if settings.supabase_anon_key else ""
        return RealtimeOut(url=f"{base}/realtime/v1", anon_key=key, contract=CONTRACT_VERSION)
