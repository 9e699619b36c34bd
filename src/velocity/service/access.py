"""Who may open a preview URL: anyone for a public project; otherwise the holder of a signed link
(exchanged for a cookie scoped to that preview's host) or the owner's own token."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

from velocity.auth import Caller, TokenIssuer
from velocity.auth.tokens import ACCESS_AUDIENCE, SESSION_AUDIENCE
from velocity.clock import Clock
from velocity.domain import NotFound, Preview, Unauthorized
from velocity.service.rows import RecentRows
from velocity.settings import Settings
from velocity.store import Store

ACCESS_PATH = "/__velocity/access"
# ``__Host-``: browsers take it only host-only (no Domain), Path=/ and Secure, so no preview can set a
# copy for the parent domain that shadows this one (cookie tossing). Secure needs https, or a
# ``localhost`` name, which browsers count as secure; on plain http elsewhere the bare name is used.
SESSION_COOKIE = "__Host-velocity_preview"
INSECURE_SESSION_COOKIE = "velocity_preview"
SESSION_COOKIES = (SESSION_COOKIE, INSECURE_SESSION_COOKIE)


@dataclass(frozen=True, slots=True)
class Session:
    name: str
    cookie: str
    max_age: int
    secure: bool


class PreviewAccess:
    def __init__(
        self,
        *,
        store: Store,
        issuer: TokenIssuer,
        settings: Settings,
        clock: Clock,
        rows: RecentRows | None = None,
    ) -> None:
        self._store = store
        self._rows = rows or RecentRows(store)
        self._issuer = issuer
        self._settings = settings
        self._clock = clock

    def link(self, preview: Preview) -> str:
        """A short-lived URL that signs its opener in to this preview (and no other)."""
        token = self._issuer.mint_preview(
            preview_id=preview.id,
            user_id=preview.user_id,
            audience=ACCESS_AUDIENCE,
            ttl_seconds=self._settings.preview_access_link_seconds,
        )
        return f"{self._settings.preview_url(preview.id).rstrip('/')}{ACCESS_PATH}?token={quote(token)}"

    async def open_session(self, preview_id: str, link_token: str) -> Session:
        """Exchange a signed link for a session cookie that lasts as long as the preview may."""
        claims = self._issuer.preview_claims(link_token, audience=ACCESS_AUDIENCE, preview_id=preview_id)
        user_id = str(claims["sub"])
        preview = await self._store.find_preview(preview_id)
        if preview is None or not preview.is_live:
            raise NotFound(f"no live preview {preview_id}")
        expires = datetime.fromtimestamp(int(claims["exp"]), UTC)
        jti = claims.get("jti")
        if not isinstance(jti, str) or not await self._store.use_link(
            jti, expires_at=expires, now=self._clock.now()
        ):
            raise Unauthorized(
                "this preview link has been used already (each link signs in one browser, once): "
                "open the preview again from the editor for a new link"
            )
        seconds = max(1, int((preview.expires_at - self._clock.now()).total_seconds()))
        cookie = self._issuer.mint_preview(
            preview_id=preview_id, user_id=user_id, audience=SESSION_AUDIENCE, ttl_seconds=seconds
        )
        url = urlsplit(self._settings.preview_url(preview_id))
        secure = url.scheme == "https" or (url.hostname or "").endswith("localhost")
        return Session(
            name=SESSION_COOKIE if secure else INSECURE_SESSION_COOKIE,
            cookie=cookie,
            max_age=seconds,
            secure=secure,
        )

    async def is_open(self, preview_id: str) -> bool:
        """Whether anyone may open the preview (public, or no such preview: routing answers that)."""
        preview = await self._rows.preview(preview_id)
        # No such preview, or one that has ended: routing answers 404 or 410, which says more.
        if preview is None or not preview.is_live or self._settings.preview_access == "public":
            return True
        return await self._rows.public(preview.project_id)

    def session_valid(self, preview_id: str, session: str) -> bool:
        try:
            self._issuer.verify_preview(session, audience=SESSION_AUDIENCE, preview_id=preview_id)
        except Unauthorized:
            return False
        return True

    async def check(self, preview_id: str, *, session: str | None, caller: Caller | None) -> None:
        """Let the request through, or raise ``Unauthorized`` saying how to get in."""
        preview = await self._rows.preview(preview_id)
        if preview is None:
            return  # routing answers "no such preview"
        if await self.is_open(preview_id):
            return
        if session is not None:
            self._issuer.verify_preview(session, audience=SESSION_AUDIENCE, preview_id=preview_id)
            return
        if caller is not None and not caller.is_agent and caller.subject == preview.user_id:
            return
        raise Unauthorized(
            "this preview is private: open it with the link its owner's editor shows "
            "(the API's access_url), or send the owner's bearer token"
        )
