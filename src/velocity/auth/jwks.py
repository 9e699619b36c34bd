"""Public keys from a JWKS document, cached for a bounded time and refreshed on an unknown ``kid``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

import jwt

from velocity.clock import Clock
from velocity.domain import Unauthorized

# Supabase's edge caches the JWKS for 10 minutes and its clients for up to 10 more.
TTL = timedelta(minutes=10)
# A token with an unknown kid may fetch again, but not more often than this (no fetch storms).
MIN_REFRESH = timedelta(seconds=30)

Fetch = Callable[[], Awaitable[Mapping[str, Any]]]


class JwksCache:
    def __init__(self, fetch: Fetch, *, clock: Clock) -> None:
        self._fetch = fetch
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: datetime | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def key(self, kid: str | None) -> jwt.PyJWK:
        """The key with id ``kid``; ``Unauthorized`` when the issuer does not publish it."""
        if kid is None:
            raise Unauthorized("token has no key id (kid); it cannot be matched to a signing key")
        now = self._clock.now()
        stale = self._fetched_at is None or now - self._fetched_at >= TTL
        unknown = kid not in self._keys and (
            self._fetched_at is None or now - self._fetched_at >= MIN_REFRESH
        )
        if stale or unknown:
            await self._refresh(since=self._fetched_at)
        try:
            return self._keys[kid]
        except KeyError:
            raise Unauthorized(f"token signed by an unknown key (kid {kid!r})") from None

    async def _refresh(self, *, since: datetime | None) -> None:
        async with self._lock:
            if self._fetched_at != since:
                return  # another request refreshed while this one waited: no stampede
            document = await self._fetch()
            keys: dict[str, jwt.PyJWK] = {}
            for entry in document.get("keys", []):
                if not isinstance(entry, Mapping) or "kid" not in entry or entry.get("kty") == "oct":
                    continue
                try:
                    keys[str(entry["kid"])] = jwt.PyJWK(dict(entry))
                except jwt.PyJWTError:
                    continue  # a key type this library cannot use is simply not trusted
            self._keys = keys
            self._fetched_at = self._clock.now()
            self.fetches += 1
