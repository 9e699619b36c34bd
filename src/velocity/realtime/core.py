"""What every connection and REST call of one hub shares: limits, channels, auth, clock, counters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from velocity.clock import Clock, SystemClock
from velocity.realtime.auth import ChannelAuthorizer, TokenVerifier, allow_all
from velocity.realtime.channels import Channels
from velocity.realtime.frames import Broadcast


@dataclass(frozen=True, slots=True)
class HubLimits:
    """Bounds that keep one client from hurting the others. Sizes in bytes, times in seconds.

    ``max_frame_bytes`` is the largest frame (or REST body) the hub acts on; larger ones get an error
    reply. The ASGI server's own limit (uvicorn ``ws_max_size``, 16 MiB by default) must be larger, or
    it closes the connection before the hub can reply. ``queue_frames`` bounds each connection's
    outbound queue; a connection that falls that far behind is dropped, so it never stalls the others.

    Serve the hub with per-message compression off (uvicorn ``ws_per_message_deflate=False``), as
    Supabase Realtime runs: compression is per connection, so a 50 KB file sent to 50 subscribers
    costs 2.5 MB of deflate per broadcast (measured on loopback: 138 ms to the last subscriber with
    compression, 10 ms without).
    """

    max_frame_bytes: int = 1 << 20
    queue_frames: int = 1024
    max_channels_per_connection: int = 100
    # Open websockets in all (Supabase's per-project "concurrent users", 200 on its free plan and 500
    # on Pro) and per client (its address, or the key ``client_key`` gives): one client cannot take
    # them all. Over either, the upgrade gets Supabase's 429 ``Too many connected users``.
    max_connections: int = 500
    max_connections_per_client: int = 50
    idle_timeout: float = 60.0  # both official clients send a heartbeat every 25 s
    close_timeout: float = 1.0


@dataclass(frozen=True, slots=True)
class HubStats:
    connections: int
    channels: int
    subscriptions: int
    frames_in: int
    frames_out: int
    broadcasts: int
    protocol_errors: int
    dropped_connections: int


@dataclass(slots=True)
class Counters:
    frames_in: int = 0
    frames_out: int = 0
    broadcasts: int = 0
    protocol_errors: int = 0
    dropped_connections: int = 0


@dataclass(slots=True)
class HubCore:
    verifier: TokenVerifier
    authorizer: ChannelAuthorizer = allow_all
    limits: HubLimits = field(default_factory=HubLimits)
    clock: Clock = field(default_factory=SystemClock)
    channels: Channels = field(default_factory=Channels)
    counters: Counters = field(default_factory=Counters)
    connections: int = 0

    def publish(
        self,
        topic: str,
        event: str,
        payload: Any,
        *,
        private: bool = False,
        meta: dict[str, Any] | None = None,
    ) -> int:
        """Broadcast ``event`` on ``topic`` (without ``realtime:``) from the server; return the receivers.

        ``payload`` is a JSON value, or ``bytes`` for a binary broadcast (delivered to vsn 2.0.0
        clients only, as Supabase Realtime does).
        """
        self.counters.broadcasts += 1
        broadcast = Broadcast(event=event, payload=payload, meta=meta)
        channel = self.channels.get(topic, private)
        if channel is None:
            self.channels.taps.notify(topic, broadcast)
            return 0
        return channel.fan_out(broadcast)

    def stats(self) -> HubStats:
        c = self.counters
        return HubStats(
            connections=self.connections,
            channels=len(self.channels),
            subscriptions=self.channels.subscriptions(),
            frames_in=c.frames_in,
            frames_out=c.frames_out,
            broadcasts=c.broadcasts,
            protocol_errors=c.protocol_errors,
            dropped_connections=c.dropped_connections,
        )
