"""HS256 tokens like Supabase's, and the tests' own verifier of them.

The orchestrator brings its real verifier; this one accepts the anon key (``role: anon``, no
``sub``/``aud``), user access tokens (``aud: authenticated``, ``sub``, ``iss``) and opaque
``sb_publishable_`` keys as anon, and refuses everything else with ``Unauthorized``, with the messages
Supabase Realtime uses.
"""

from __future__ import annotations

import time
from typing import Any

import jwt

from velocity.domain.errors import Unauthorized
from velocity.realtime import Claims

SECRET = "test-secret-of-the-local-hub-at-least-32-characters"
ISSUER = "http://127.0.0.1/auth/v1"


def mint(claims: dict[str, Any], secret: str = SECRET) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


def anon_key(**extra: Any) -> str:
    return mint(
        {"iss": "velocity", "role": "anon", "iat": int(time.time()), "exp": int(time.time()) + 3600, **extra}
    )


def user_token(sub: str = "user-1", *, ttl: float = 3600, **extra: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": "authenticated",
        "role": "authenticated",
        "sub": sub,
        "iat": now,
        "exp": now + ttl,
    }
    return mint({**claims, **extra})


async def verify(token: str, /) -> Claims:
    """Anon keys and user tokens signed with ``SECRET``; the Supabase messages for what fails."""
    if token.startswith("sb_publishable_"):
        return {"role": "anon"}
    try:
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError as exc:
        raise Unauthorized("The token provided is not a valid JWT") from exc
    user = unverified.get("role") == "authenticated"
    try:
        claims: Claims = jwt.decode(
            token,
            SECRET,
            algorithms=["HS256"],
            audience="authenticated" if user else None,
            issuer=ISSUER if user else None,
            options={"require": ["exp", "role", *(["sub", "aud", "iss"] if user else [])]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("Token has expired") from exc
    except jwt.InvalidSignatureError as exc:
        raise Unauthorized("Failed to validate JWT signature") from exc
    except jwt.InvalidTokenError as exc:
        raise Unauthorized(f"Invalid token: {exc}") from exc
    return claims
