"""The router's door for private previews: the sign-in path, the check, and our credentials kept
away from the preview's own code."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from starlette.types import Scope, Send

from velocity.auth import Caller, TokenVerifier
from velocity.domain import BadRequest, Forbidden, Unauthorized
from velocity.service.access import ACCESS_PATH, SESSION_COOKIES, PreviewAccess, Session


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

        An ``Authorization`` header is ours when it verifies as one of our tokens: it is removed on
        every path, whether it opened the preview or not; the app's own tokens (for its own backend)
        pass through untouched. Our session cookie never reaches the app. A request admitted by the
        cookie alone (a browser's ambient credential) must also come from the preview's own pages.
        """
        ours = await self._our_token(scope)
        if await self._access.is_open(preview_id):
            return self.strip_credentials(scope, bearer=ours is not None)
        if any(self._access.session_valid(preview_id, value) for value in _session_cookies(scope)):
            _refuse_other_sites(scope)
            return self.strip_credentials(scope, bearer=ours is not None)
        await self._access.check(preview_id, session=None, caller=ours)
        return self.strip_credentials(scope, bearer=True)

    async def _our_token(self, scope: Scope) -> Caller | None:
        for bearer in _bearers(scope):
            try:
                return await self._verifier.verify(bearer)
            except Unauthorized:
                continue  # not one of ours: the request is judged without it
        return None

    @staticmethod
    def strip_credentials(scope: Scope, *, bearer: bool = True) -> Scope:
        """The request as the preview sees it: without our session cookies (and the owner's token)."""
        headers = []
        for name, value in scope.get("headers", ()):
            if name == b"authorization" and bearer:
                continue
            if name == b"cookie":
                kept = [c for c in value.split(b";") if _cookie_name(c) not in _OUR_COOKIES]
                if not kept:
                    continue
                value = b";".join(kept).strip()
            headers.append((name, value))
        return {**scope, "headers": headers}


_OUR_COOKIES = frozenset(name.encode() for name in SESSION_COOKIES)
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _refuse_other_sites(scope: Scope) -> None:
    """Another preview's page shares our site (``*.PREVIEW_DOMAIN``), so SameSite lets the owner's
    browser send the cookie along with its requests: refuse what a page of another origin started.

    * websockets and unsafe methods must carry this preview's own ``Origin`` (or none: not a browser);
    * other requests a page of another site started (``Sec-Fetch-Site`` same-site or cross-site) pass
      only as navigations, as following a link does.
    """
    origin = _header(scope, b"origin")
    unsafe = scope["type"] == "websocket" or scope.get("method", "GET") not in _SAFE_METHODS
    if unsafe and origin is not None and urlsplit(origin).netloc != (_header(scope, b"host") or ""):
        raise Forbidden(
            f"a page of {origin} may not send this request to a private preview: only the preview's "
            "own pages may use its sign-in"
        )
    fetch_site = _header(scope, b"sec-fetch-site")
    if fetch_site in ("same-site", "cross-site") and _header(scope, b"sec-fetch-mode") != "navigate":
        raise Forbidden(
            "a page of another site may not load this private preview's resources with its sign-in"
        )


def _header(scope: Scope, wanted: bytes) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == wanted:
            return str(value.decode("latin-1"))
    return None


def _bearers(scope: Scope) -> list[str]:
    found = []
    for name, raw in scope.get("headers", ()):
        value = raw.decode("latin-1")
        if name == b"authorization" and value.lower().startswith("bearer ") and value[7:].strip():
            found.append(value[7:].strip())
    return found


def _cookie_name(pair: bytes) -> bytes:
    return pair.strip().split(b"=", 1)[0].strip()


def _session_cookies(scope: Scope) -> list[str]:
    """Every value of our session cookies the request carries: a copy a preview tossed for the parent
    domain may come before ours, so each is tried rather than the first or last."""
    values = []
    for name, raw in scope.get("headers", ()):
        if name != b"cookie":
            continue
        for pair in raw.split(b";"):
            if _cookie_name(pair) in _OUR_COOKIES and b"=" in pair:
                values.append(pair.split(b"=", 1)[1].strip().strip(b'"').decode("latin-1"))
    return values


async def _redirect_with_cookie(send: Send, session: Session) -> None:
    # Host-only (no Domain attribute): the cookie is sent to this preview's host and no other. Strict:
    # never on a request another site starts, so the way to the app is a navigation of this page's
    # own (a redirect would still count as the editor's, and arrive without the cookie).
    cookie = f"{session.name}={session.cookie}; Path=/; Max-Age={session.max_age}; HttpOnly; SameSite=Strict"
    if session.secure:
        cookie += "; Secure"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/html; charset=utf-8"),
                (b"set-cookie", cookie.encode()),
                (b"cache-control", b"no-store"),
                (b"referrer-policy", b"no-referrer"),
                (b"content-security-policy", _SIGNED_IN_CSP),
            ],
        }
    )
    await send({"type": "http.response.body", "body": _SIGNED_IN_PAGE})


_SIGNED_IN_PAGE = (
    b'<!doctype html><meta charset="utf-8"><meta http-equiv="refresh" content="0;url=/">'
    b'<title>Signed in</title><p>Signed in. <a href="/">Open the preview</a>.</p>'
)
_SIGNED_IN_CSP = b"default-src 'none'; base-uri 'none'; form-action 'none'"
