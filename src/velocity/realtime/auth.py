"""Who may connect and join: the two plug-in points the hub's owner passes in.

The hub never parses a token itself. A ``TokenVerifier`` turns a token string into claims or raises
``Unauthorized``; the orchestrator passes one that accepts its anon key (HS256, ``role: anon``) and its
users' access tokens (``aud: authenticated``). A ``ChannelAuthorizer``, when given, decides whether those
claims may use a topic, and raises ``Forbidden`` when not.

Tokens arrive in four places, as with Supabase Realtime: the ``apikey`` query parameter (or the
``x-api-key`` header) at connect; ``access_token`` in a join; an ``access_token`` event on a joined
channel (refresh); ``Authorization: Bearer`` (else ``apikey``) on the REST endpoints. Opaque API keys
(``sb_publishable_…``, ``sb_secret_…``) in a join or a refresh stand for "no user token": the channel
keeps the claims of the connection's key, as the real server does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Protocol, TypeAlias

from velocity.domain.errors import Forbidden

Claims: TypeAlias = Mapping[str, Any]

OPAQUE_KEY_PREFIX: Final = "sb_"


class TokenVerifier(Protocol):
    """Verify a token; return its claims (which must name a ``role``) or raise ``Unauthorized``.

    ``exp``, when present in the claims, is when the channels joined with this token end (seconds
    since the epoch). Verification may do I/O (a JWKS fetch), hence async.
    """

    async def __call__(self, token: str, /) -> Claims: ...


class ChannelAuthorizer(Protocol):
    """Raise ``Forbidden`` unless ``claims`` may join, and broadcast to, ``topic`` (without ``realtime:``)."""

    async def __call__(self, claims: Claims, topic: str, /) -> None: ...


async def allow_all(claims: Claims, topic: str, /) -> None:
    """The default: any verified token may use any topic, as with public Supabase channels."""


def is_opaque_key(token: str) -> bool:
    return token.startswith(OPAQUE_KEY_PREFIX)


def expires_at(claims: Claims) -> float | None:
    exp = claims.get("exp")
    if isinstance(exp, int | float) and not isinstance(exp, bool):
        return float(exp)
    return None


def forbidden_reason(topic: str, exc: Forbidden) -> str:
    detail = exc.message or f"You do not have permissions to read from this Channel topic: {topic}"
    return f"Unauthorized: {detail}"
