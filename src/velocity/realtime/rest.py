"""The REST broadcast endpoints, answering as Supabase Realtime does (202, empty body).

* ``POST /api/broadcast`` with ``{"messages": [{topic, event, payload, private?, id?}]}``: the batch
  form, also what realtime-js falls back to when ``send()`` runs before the channel is joined.
* ``POST /api/broadcast/{topic}/events/{event}[?private=true]`` with a JSON or
  ``application/octet-stream`` body: what ``httpSend()`` (JS) and ``http_send()`` (Python) call.

The token is ``Authorization: Bearer`` if present, else the ``apikey`` header, else the ``apikey``
query parameter (realtime-js appends its socket parameters to the URL).
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from velocity.domain.errors import Forbidden, Unauthorized
from velocity.realtime.auth import Claims
from velocity.realtime.core import HubCore
from velocity.realtime.frames import loads

logger = logging.getLogger(__name__)


class _Refused(Exception):
    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.response = JSONResponse({"error": error, "message": error}, status_code=status)


class BroadcastEndpoints:
    def __init__(self, core: HubCore) -> None:
        self._core = core

    async def batch(self, request: Request) -> Response:
        try:
            claims = await self._authenticate(request)
            body = _json(await self._body(request))
            messages = body.get("messages") if isinstance(body, dict) else None
            if not isinstance(messages, list) or not messages:
                raise _Refused(422, 'the body is {"messages": [{topic, event, payload}, ...]}')
            checked = [_message(i, message) for i, message in enumerate(messages)]
            for topic in {topic for topic, *_ in checked}:
                await self._authorize(claims, topic)
        except _Refused as refused:
            return refused.response
        for topic, event, payload, private, meta in checked:
            self._core.publish(topic, event, payload, private=private, meta=meta)
        return Response(status_code=202)

    async def single(self, request: Request) -> Response:
        topic: str = request.path_params["topic"]
        event: str = request.path_params["event"]
        private = request.query_params.get("private", "false").lower() == "true"
        try:
            claims = await self._authenticate(request)
            body = await self._body(request)
            content_type = request.headers.get("content-type", "application/json").split(";")[0].strip()
            if content_type == "application/octet-stream":
                payload: Any = body
            elif content_type == "application/json":
                payload = _json(body)
                if not isinstance(payload, dict):
                    raise _Refused(422, "a JSON payload must be an object")
            else:
                raise _Refused(415, "send application/json or application/octet-stream")
            await self._authorize(claims, topic)
        except _Refused as refused:
            return refused.response
        self._core.publish(topic, event, payload, private=private)
        return Response(status_code=202)

    async def _authenticate(self, request: Request) -> Claims:
        authorization = request.headers.get("authorization", "")
        scheme, _, bearer = authorization.partition(" ")
        token = bearer.strip() if scheme.lower() == "bearer" else ""
        token = token or request.headers.get("apikey") or request.query_params.get("apikey") or ""
        if not token:
            raise _Refused(401, "API key is missing")
        try:
            return await self._core.verifier(token)
        except Unauthorized as exc:
            raise _Refused(401, exc.message) from exc
        except Exception as exc:
            logger.exception("realtime: the token verifier failed")
            raise _Refused(500, "Error connecting to Realtime") from exc

    async def _authorize(self, claims: Claims, topic: str) -> None:
        try:
            await self._core.authorizer(claims, topic)
        except Forbidden as exc:
            raise _Refused(403, exc.message or f"You may not broadcast to {topic}") from exc

    async def _body(self, request: Request) -> bytes:
        limit = self._core.limits.max_frame_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _Refused(413, f"the body exceeds the limit of {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        # Read in chunks so a body without (or lying about) Content-Length is still bounded.
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _Refused(413, f"the body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)


def _json(body: bytes) -> Any:
    try:
        return loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _Refused(422, f"the body is not JSON: {exc}") from exc


def _message(index: int, message: Any) -> tuple[str, str, Any, bool, dict[str, Any] | None]:
    if not isinstance(message, dict):
        raise _Refused(422, f"messages[{index}] must be an object")
    topic, event = message.get("topic"), message.get("event")
    if not isinstance(topic, str) or not topic or not isinstance(event, str) or not event:
        raise _Refused(422, f"messages[{index}] needs a non-empty `topic` and `event`")
    if not isinstance(message.get("payload"), dict):
        raise _Refused(422, f"messages[{index}] needs a `payload` object")
    message_id = message.get("id")
    meta = {"id": message_id} if isinstance(message_id, str) and message_id else None
    return topic, event, message["payload"], bool(message.get("private", False)), meta
