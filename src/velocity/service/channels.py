"""Who may use the local Realtime hub: the parts the RLS policies of docs/protocol.md play in Supabase.

The hub asks two questions. ``verify``: is this token one of ours? The anon key (``role: anon``), a
user's access token and an agent's token are; anything else is refused before the socket opens.
``authorize``: may these claims join (and broadcast to) this topic? ``preview:{project_id}`` is for
the project's owner and for agents minted for that project, while their own preview lives; the
anon key alone opens no preview channel. Other topics are open to any verified token, as public Supabase channels are, except from
inside a preview: a connection that came through the egress proxy (which says so in a header of its
own) may use its own preview's channel only, so the hub is no way around the egress allowlist.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any, Final

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from velocity.auth import AGENT_ROLE, TokenVerifier
from velocity.domain import Forbidden, NotFound, Unauthorized
from velocity.realtime.contract import TOPIC_PREFIX
from velocity.service.previews import require_live_agent
from velocity.store import Store

_ROLES: Final = frozenset({"anon", "authenticated", AGENT_ROLE})
# The project of the preview a request to the hub came from (None: not from a preview).
_from_preview: ContextVar[str | None] = ContextVar("velocity_realtime_from_preview", default=None)


def from_previews(app: ASGIApp, *, header: str) -> ASGIApp:
    """``app`` (the hub) told, for each request, which preview it came from: ``header``, which only
    the egress proxy sets (it drops a client's own), names the calling preview's project."""
    wanted = header.lower().encode("latin-1")

    async def marked(scope: Scope, receive: Receive, send: Send) -> None:
        values = [v.decode("latin-1") for k, v in scope.get("headers", ()) if k == wanted]
        # Several copies cannot all be the proxy's: such a request may use no channel at all.
        project = values[0] if len(values) == 1 else ("" if values else None)
        token = _from_preview.set(project)
        try:
            await app(scope, receive, send)
        finally:
            _from_preview.reset(token)

    return marked


def client_key(header: str) -> Callable[[HTTPConnection], str]:
    """Whom a hub connection counts against: the calling preview (all previews come from the egress
    proxy's one address) or else the client's address."""

    def key(connection: HTTPConnection) -> str:
        project = connection.headers.get(header)
        if project is not None:
            return f"preview {project}"
        return connection.client.host if connection.client else "?"

    return key


class ChannelAccess:
    def __init__(self, verifier: TokenVerifier, store: Store) -> None:
        self._verifier = verifier
        self._store = store

    async def verify(self, token: str, /) -> Mapping[str, Any]:
        """The claims of the anon key, a user token or an agent token; ``Unauthorized`` otherwise."""
        claims = await self._verifier.claims(token)
        role = claims.get("role")
        if role not in _ROLES:
            raise Unauthorized(f"a token with role {role!r} cannot use Realtime here")
        if role != "anon" and not isinstance(claims.get("sub"), str):
            raise Unauthorized("the token names no subject (sub)")
        if role == AGENT_ROLE:
            await self._live_agent(claims)
        return claims

    async def _live_agent(self, claims: Mapping[str, Any]) -> None:
        await require_live_agent(
            self._store, preview_id=claims.get("preview_id"), project_id=claims.get("project_id")
        )

    async def authorize(self, claims: Mapping[str, Any], topic: str, /) -> None:
        """Raise ``Forbidden`` unless ``claims`` may use ``topic``."""
        calling = _from_preview.get()
        if calling is not None and topic != f"{TOPIC_PREFIX}{calling}":
            raise Forbidden(
                f"a preview may use only its own channel, {TOPIC_PREFIX}{calling}: "
                "the hub is not a way around PREVIEW_EGRESS_ALLOWLIST"
            )
        if not topic.startswith(TOPIC_PREFIX):
            return
        project_id = topic[len(TOPIC_PREFIX) :]
        role = claims.get("role")
        if role == AGENT_ROLE:
            if claims.get("project_id") != project_id:
                raise Forbidden(f"this agent's token is for another project, not {project_id}")
            try:
                await self._live_agent(claims)
            except Unauthorized as exc:
                raise Forbidden(exc.message) from None
            return
        if role != "authenticated":
            raise Forbidden("preview channels need a signed-in user's token, not the anon key alone")
        try:
            project = await self._store.get_project(project_id)
        except NotFound:
            raise Forbidden(f"no project {project_id} of yours") from None
        if project.owner_id != claims.get("sub"):
            raise Forbidden(f"no project {project_id} of yours")
