"""Minting and verifying HS256 JWTs shaped like Supabase Auth's."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from velocity.auth.keys import SigningKey
from velocity.domain import Unauthorized

AGENT_ROLE = "agent"
OPERATOR_ROLE = "operator"
USER_AUDIENCE = "authenticated"
AGENT_AUDIENCE = "velocity-agent"
# A signed preview link (minutes), and the cookie it is exchanged for (until the preview ends).
ACCESS_AUDIENCE = "velocity-preview-access"
SESSION_AUDIENCE = "velocity-preview-session"


@dataclass(frozen=True, slots=True)
class Caller:
    """A verified caller: a user (``role=authenticated``) or one preview's agent."""

    subject: str
    role: str
    project_id: str | None = None
    preview_id: str | None = None
    operator: bool = False  # may use the admin endpoints (app_metadata.velocity_role = "operator")

    @property
    def is_agent(self) -> bool:
        return self.role == AGENT_ROLE


def caller_from_claims(claims: Mapping[str, Any]) -> Caller:
    """The caller a verified token names: one of our agents, or a signed-in user."""
    role = str(claims.get("role", ""))
    if role == AGENT_ROLE and claims.get("aud") == AGENT_AUDIENCE:
        return Caller(
            subject=str(claims["sub"]),
            role=role,
            project_id=str(claims.get("project_id")),
            preview_id=str(claims.get("preview_id")),
        )
    audiences = claims.get("aud")
    audiences = audiences if isinstance(audiences, list) else [audiences]
    if role != "authenticated" or USER_AUDIENCE not in audiences:
        raise Unauthorized(f"a token with role {role!r} cannot call this API; use a user access token")
    # app_metadata is writable only with Supabase's service key, never by the user themselves.
    metadata = claims.get("app_metadata")
    operator = isinstance(metadata, Mapping) and metadata.get("velocity_role") == OPERATOR_ROLE
    return Caller(subject=str(claims["sub"]), role=role, operator=operator)


class TokenIssuer:
    """Mints tokens the way Supabase Auth would: users' with the ES256 signing key (when given) or
    the HS256 secret; the anon key and agents' tokens with the HS256 secret."""

    def __init__(self, secret: str, *, issuer: str, signing_key: SigningKey | None = None) -> None:
        if len(secret) < 32:
            raise ValueError("the JWT secret must be at least 32 characters")
        self._secret = secret
        self._signing_key = signing_key
        self.issuer = issuer

    def _encode(self, claims: dict[str, Any], ttl_seconds: float, *, asymmetric: bool = False) -> str:
        now = int(time.time())
        claims = {"iss": self.issuer, "iat": now, "exp": now + int(ttl_seconds), **claims}
        if asymmetric and self._signing_key is not None:
            return jwt.encode(
                claims,
                self._signing_key.private_key,
                algorithm="ES256",
                headers={"kid": self._signing_key.kid},
            )
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def mint_user(
        self,
        user_id: str,
        *,
        ttl_seconds: float = 3600,
        email: str | None = None,
        legacy: bool = False,
        operator: bool = False,
    ) -> str:
        """A user access token: ES256 with a ``kid`` like Supabase's signing keys (HS256 if ``legacy``)."""
        claims: dict[str, Any] = {"sub": user_id, "aud": USER_AUDIENCE, "role": "authenticated"}
        if operator:
            claims["app_metadata"] = {"velocity_role": OPERATOR_ROLE}
        if email:
            claims["email"] = email
        return self._encode(claims, ttl_seconds, asymmetric=not legacy)

    def mint_anon(self, *, ttl_seconds: float = 10 * 365 * 86400) -> str:
        """The public anon key, as Supabase issues it (role ``anon``, no subject)."""
        return self._encode({"role": "anon", "ref": "local"}, ttl_seconds)

    def origin_secret(self, preview_id: str) -> str:
        """The secret a preview's machine expects with every request (``ORIGIN_HEADER``): derived from
        the issuer's secret, so every orchestrator replica knows it and nothing needs storing."""
        message = f"velocity-origin:{preview_id}".encode()
        return hmac.new(self._secret.encode(), message, hashlib.sha256).hexdigest()

    def mint_agent(self, *, preview_id: str, project_id: str, ttl_seconds: float) -> str:
        claims = {
            "sub": f"agent:{preview_id}",
            "aud": AGENT_AUDIENCE,
            "role": AGENT_ROLE,
            "project_id": project_id,
            "preview_id": preview_id,
        }
        return self._encode(claims, ttl_seconds)

    def mint_preview(self, *, preview_id: str, user_id: str, audience: str, ttl_seconds: float) -> str:
        """A token good for one preview only: a signed link or the session cookie it turns into."""
        claims = {
            "sub": user_id,
            "aud": audience,
            "role": "preview",
            "preview_id": preview_id,
            "jti": secrets.token_urlsafe(16),  # a link is used once: its id is recorded when it is
        }
        return self._encode(claims, ttl_seconds)

    def verify_preview(self, token: str, *, audience: str, preview_id: str) -> str:
        """The user a preview token was made for; ``Unauthorized`` when it is for another preview,
        expired, forged, or of another kind."""
        return str(self.preview_claims(token, audience=audience, preview_id=preview_id)["sub"])

    def preview_claims(self, token: str, *, audience: str, preview_id: str) -> dict[str, Any]:
        """``verify_preview``'s claims: ``sub``, ``exp`` and, for tokens made since links are one-use,
        ``jti``."""
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                audience=audience,
                issuer=self.issuer,
                options={"require": ["exp", "sub", "aud", "preview_id"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized(
                "this preview link has expired; open the preview again from the editor"
            ) from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"preview token rejected: {exc}") from None
        if claims.get("preview_id") != preview_id:
            raise Unauthorized("this token belongs to another preview")
        return dict(claims)

    def verify(self, token: str) -> Caller:
        """Verify a token this issuer made (signature, expiry, issuer, audience), synchronously."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("malformed bearer token: expected a JWT") from None
        alg = header.get("alg")
        if alg == "ES256" and self._signing_key is not None:
            key: Any = self._signing_key.public_key
        elif alg == "HS256":
            key = self._secret
        else:
            raise Unauthorized(f"unsupported token algorithm {alg!r}")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=[USER_AUDIENCE, AGENT_AUDIENCE],
                issuer=self.issuer,
                options={"require": ["exp", "iss", "sub", "aud"]},
                leeway=30,
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired; mint a new one (velocity token)") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"token rejected: {exc}") from None
        return caller_from_claims(claims)


def load_or_create_secret(path: Path) -> str:
    """The local JWT secret: generated once, kept in a file only the owner can read."""
    try:
        return str(json.loads(path.read_text())["jwt_secret"])
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return load_or_create_secret(path)
    with os.fdopen(fd, "w") as handle:
        json.dump({"jwt_secret": secret}, handle)
    return secret
