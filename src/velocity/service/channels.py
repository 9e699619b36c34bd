"""Who may use the local Realtime hub: the parts the RLS policies of docs/protocol.md play in Supabase.

The hub asks two questions. ``verify``: is this token one of ours? The anon key (``role: anon``), a
user's access token and an agent's token are; anything else is refused before the socket opens.
``authorize``: may these claims join (and broadcast to) this topic? ``preview:{project_id}`` is for
the project's owner and for agents minted for that project; the anon key alone opens no preview
channel. Other topics are open to any verified token, as public Supabase channels are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from velocity.auth import AGENT_ROLE, TokenVerifier
from velocity.domain import Forbidden, NotFound, Unauthorized
from velocity.realtime.contract import TOPIC_PREFIX
from velocity.store import Store

_ROLES: Final = frozenset({"anon", "authenticated", AGENT_ROLE})


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
        return claims

    async def authorize(self, claims: Mapping[str, Any], topic: str, /) -> None:
        """Raise ``Forbidden`` unless ``claims`` may use ``topic``."""
        if not topic.startswith(TOPIC_PREFIX):
            return
        project_id = topic[len(TOPIC_PREFIX) :]
        role = claims.get("role")
        if role == AGENT_ROLE:
            if claims.get("project_id") != project_id:
                raise Forbidden(f"this agent's token is for another project, not {project_id}")
            return
        if role != "authenticated":
            raise Forbidden("preview channels need a signed-in user's token, not the anon key alone")
        try:
            project = await self._store.get_project(project_id)
        except NotFound:
            raise Forbidden(f"no project {project_id} of yours") from None
        if project.owner_id != claims.get("sub"):
            raise Forbidden(f"no project {project_id} of yours")
