"""Presence of one channel: who is here, in the shape Phoenix Presence sends.

State is ``{key: {"metas": [meta, ...]}}``; each meta carries a ``phx_ref`` that names one tracking.
A key may have several metas (one user, two tabs); one subscription owns at most one meta. Changes come
back as the ``{"joins": ..., "leaves": ...}`` diff that every member of the channel receives. A
re-track is a leave of the old meta and a join of the new one, which carries ``phx_ref_prev``.
"""

from __future__ import annotations

import secrets
from collections.abc import Hashable
from typing import Any, TypeAlias

Meta: TypeAlias = dict[str, Any]
PresenceMap: TypeAlias = dict[str, dict[str, list[Meta]]]
PresenceDiff: TypeAlias = dict[str, PresenceMap]  # {"joins": PresenceMap, "leaves": PresenceMap}


class Presence:
    def __init__(self) -> None:
        self._metas: dict[str, dict[Hashable, Meta]] = {}

    def __bool__(self) -> bool:
        return bool(self._metas)

    def state(self) -> PresenceMap:
        return {key: {"metas": list(owned.values())} for key, owned in self._metas.items()}

    def track(self, key: str, owner: Hashable, meta: Meta) -> PresenceDiff:
        """Record ``owner``'s meta under ``key``; return the diff to fan out."""
        owned = self._metas.setdefault(key, {})
        new: Meta = {**meta, "phx_ref": secrets.token_hex(10)}
        old = owned.get(owner)
        if old is not None:
            new["phx_ref_prev"] = old["phx_ref"]
        owned[owner] = new
        leaves: PresenceMap = {key: {"metas": [old]}} if old is not None else {}
        return {"joins": {key: {"metas": [new]}}, "leaves": leaves}

    def untrack(self, key: str, owner: Hashable) -> PresenceDiff | None:
        """Forget ``owner``'s meta under ``key``; return the diff, or None if it was not tracked."""
        owned = self._metas.get(key)
        if owned is None or owner not in owned:
            return None
        old = owned.pop(owner)
        if not owned:
            del self._metas[key]
        return {"joins": {}, "leaves": {key: {"metas": [old]}}}
