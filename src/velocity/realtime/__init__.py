"""The embedded Realtime hub: Supabase Realtime's channel protocol, served by the orchestrator.

In production the editor and each preview agent meet on Supabase Realtime. Locally the orchestrator
mounts this hub at ``/realtime/v1`` so that the same agent code and the official clients (Python
``realtime``, ``@supabase/realtime-js``) work unchanged. It speaks both Phoenix serializers (vsn 1.0.0
JSON objects, vsn 2.0.0 arrays with binary broadcast frames), heartbeats, joins, broadcast fan-out with
``self`` and ``ack``, presence, leave and close, ``access_token`` refresh and the REST broadcast
endpoints. It does not carry ``postgres_changes`` (joins that ask for them are accepted, and nothing is
ever delivered on them) and keeps no message history.

Authentication is the owner's: the hub takes a ``TokenVerifier`` (token -> claims, or ``Unauthorized``)
and optionally a ``ChannelAuthorizer`` (claims, topic -> ``Forbidden`` or not). The channel contract the
editor and the agent speak on top of it is ``contract`` (names and types) and ``docs/protocol.md``.

The hub's names load on first use, so that ``velocity.realtime.contract`` stays free for the agent,
whose start is on the critical path of every preview.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from velocity.realtime.auth import ChannelAuthorizer, Claims, TokenVerifier, allow_all
    from velocity.realtime.channels import Listener
    from velocity.realtime.core import HubLimits, HubStats
    from velocity.realtime.hub import RealtimeHub

_HOMES = {
    "ChannelAuthorizer": "velocity.realtime.auth",
    "Claims": "velocity.realtime.auth",
    "TokenVerifier": "velocity.realtime.auth",
    "allow_all": "velocity.realtime.auth",
    "Listener": "velocity.realtime.channels",
    "HubLimits": "velocity.realtime.core",
    "HubStats": "velocity.realtime.core",
    "RealtimeHub": "velocity.realtime.hub",
}

__all__ = [
    "ChannelAuthorizer",
    "Claims",
    "HubLimits",
    "HubStats",
    "Listener",
    "RealtimeHub",
    "TokenVerifier",
    "allow_all",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'velocity.realtime' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
