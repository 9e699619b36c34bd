"""Verifying callers' tokens as Supabase recommends: asymmetric keys from the JWKS, or the legacy
HS256 secret; signature, ``exp``, ``iss`` and ``aud`` checked; anon and service keys refused."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jwt

from velocity.auth.jwks import JwksCache
from velocity.auth.tokens import AGENT_AUDIENCE, USER_AUDIENCE, Caller, caller_from_claims
from velocity.domain import Unauthorized

ASYMMETRIC = frozenset({"ES256", "RS256", "EdDSA"})


class TokenVerifier:
    def __init__(self, *, issuer: str, hs256_secret: str | None, jwks: JwksCache | None) -> None:
        self.issuer = issuer
        self._secret = hs256_secret
        self._jwks = jwks

    async def claims(self, token: str) -> Mapping[str, Any]:
        """The verified claims of any token we accept (user, agent or the anon key)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("malformed bearer token: expected a JWT") from None
        alg = header.get("alg")
        if alg in ASYMMETRIC:
            if self._jwks is None:
                raise Unauthorized(f"{alg} tokens are not accepted: no JWKS is configured (SUPABASE_URL)")
            jwk = await self._jwks.key(header.get("kid"))
            if jwk.algorithm_name != alg:
                # The key decides the algorithm, never the token: an EC key read as RSA is no check.
                raise Unauthorized(
                    f"token says {alg} but its key {header.get('kid')!r} is for {jwk.algorithm_name}"
                )
            key: Any = jwk.key
        elif alg == "HS256":
            if self._secret is None:
                raise Unauthorized("HS256 tokens are not accepted: SUPABASE_JWT_SECRET is not set")
            key = self._secret
        else:
            # Never "none", never an algorithm the token chose for us.
            raise Unauthorized(f"unsupported token algorithm {alg!r}; expected ES256, RS256 or HS256")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                options={"require": ["exp", "role"], "verify_aud": False},
                leeway=30,
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired; sign in again (locally: velocity token)") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"token rejected: {exc}") from None
        if claims.get("role") != "anon" and claims.get("iss") != self.issuer:
            raise Unauthorized(f"token issued by {claims.get('iss')!r}, expected {self.issuer!r}")
        return claims

    async def verify(self, token: str) -> Caller:
        """A user (``role=authenticated``, ``aud=authenticated``) or one of our agents; nothing else."""
        claims = await self.claims(token)
        audiences = claims.get("aud")
        audiences = set(audiences) if isinstance(audiences, list) else {audiences}
        if not audiences & {USER_AUDIENCE, AGENT_AUDIENCE} or "sub" not in claims:
            role = claims.get("role")
            raise Unauthorized(f"a token with role {role!r} cannot call this API; use a user access token")
        return caller_from_claims(claims)
