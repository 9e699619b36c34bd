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
editor and the agent speak on top of it is ``docs/protocol.md``.
"""

from velocity.realtime.auth import ChannelAuthorizer, Claims, TokenVerifier, allow_all
from velocity.realtime.core import HubLimits, HubStats
from velocity.realtime.hub import RealtimeHub

__all__ = [
    "ChannelAuthorizer",
    "Claims",
    "HubLimits",
    "HubStats",
    "RealtimeHub",
    "TokenVerifier",
    "allow_all",
]
