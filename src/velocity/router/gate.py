"""The router's door for private previews: the sign-in path, the check, and our credentials kept
away from the preview's own code."""

from __future__ import annotations

from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs

from starlette.types import Scope, Send

from velocity.auth import Caller, TokenVerifier
from velocity.domain import BadRequest, Unauthorized
from velocity.service.access import ACCESS_PATH, SESSION_COOKIE, PreviewAccess, Session


class Gate:
    def __init__(self, access: PreviewAccess, verifier: TokenVerifier) -> None:
        self._access = access
        self._verifier = verifier

    async def sign_in_if_asked(self, preview_id: str, scope: Scope, send: Send) -> bool:
        """Answer ``/__velocity/access?token=…`` with a session cookie and a redirect; True if it did."""
        if scope["type"] != "http" or scope["path"] != ACCESS_PATH:
            return False
        tokens = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
        if not tokens:
            raise BadRequest("the preview link has no token")
        await _redirect_with_cookie(send, await self._access.open_session(preview_id, tokens[0]))
        return True

    async def admit(self, preview_id: str, scope: Scope) -> Scope:
        """The request as the preview may see it, or ``Unauthorized`` when it may not reach it.

        An ``Authorization`` header counts only if it is the owner's token; the app's own tokens (for
        its own backend) pass through untouched. Our session cookie never reaches the app.
        """
        session = _cookie(scope, SESSION_COOKIE)
        if await self._access.is_open(preview_id) or (
            session is not None and self._access.session_valid(preview_id, session)
        ):
            return self.strip_credentials(scope, bearer=False)
        caller = await self._owner_token(scope)
        await self._access.check(preview_id, session=None, caller=caller)
        return self.strip_credentials(scope, bearer=True)

    async def _owner_token(self, scope: Scope) -> Caller | None:
        bearer = _bearer(scope)
        if bearer is None:
            return None
        try:
            return await self._verifier.verify(bearer)
        except Unauthorized:
            return None  # not one of ours: the request is judged without it

    @staticmethod
    def strip_credentials(scope: Scope, *, bearer: bool = True) -> Scope:
        """The request as the preview sees it: without our session cookie (and the owner's token)."""
        headers = []
        for name, value in scope.get("headers", ()):
            if name == b"authorization" and bearer:
                continue
            if name == b"cookie":
                kept = [
                    c for c in value.split(b";") if c.strip().split(b"=", 1)[0] != SESSION_COOKIE.encode()
                ]
                if not kept:
                    continue
                value = b";".join(kept).strip()
            headers.append((name, value))
        return {**scope, "headers": headers}


def _header(scope: Scope, wanted: bytes) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == wanted:
            return str(value.decode("latin-1"))
    return None


def _bearer(scope: Scope) -> str | None:
    value = _header(scope, b"authorization")
    if value is None or not value.lower().startswith("bearer "):
        return None
    return value[7:].strip() or None


def _cookie(scope: Scope, name: str) -> str | None:
    raw = _header(scope, b"cookie")
    if raw is None:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw)
    except CookieError:
        return None
    morsel = jar.get(name)
    return morsel.value if morsel else None


async def _redirect_with_cookie(send: Send, session: Session) -> None:
    # Host-only (no Domain attribute): the cookie is sent to this preview's host and no other.
    cookie = f"{SESSION_COOKIE}={session.cookie}; Path=/; Max-Age={session.max_age}; HttpOnly; SameSite=Lax"
    if session.secure:
        cookie += "; Secure"
    await send(
        {
            "type": "http.response.start",
            "status": 303,
            "headers": [
                (b"location", b"/"),
                (b"set-cookie", cookie.encode()),
                (b"cache-control", b"no-store"),
                (b"referrer-policy", b"no-referrer"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b""})
