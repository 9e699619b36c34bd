"""Each API request's id, on every log line written while it is served and on its answer.

The caller's ``x-request-id`` (or Fly's ``fly-request-id``) when it is a sane token, else a new one;
answered back in ``x-request-id``. Work the request starts (a preview's launch) carries it on.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable

from velocity import logs
from velocity.proxy.asgi import Message, Receive, Scope, Send

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HEADERS = (b"x-request-id", b"fly-request-id")
_SANE = re.compile(rb"^[A-Za-z0-9._:-]{1,64}$")


class RequestIds:
    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        given = dict(scope.get("headers", []))
        chosen = next((given[name] for name in HEADERS if name in given and _SANE.match(given[name])), None)
        request_id = chosen.decode() if chosen else secrets.token_hex(8)

        async def answer(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        with logs.bound(request_id=request_id):
            await self._app(scope, receive, answer)
