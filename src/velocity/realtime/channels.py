"""Channels and their subscribers: the hub's only shared state.

A channel is a topic plus its privacy (``realtime:room`` public and private are two channels, as in
Supabase Realtime). A subscription is one connection's join of one channel, with the options of its
join (``self``, ``ack``, presence key) and the claims it joined with. Fan-out never awaits: it hands each
subscriber's connection an encoded frame, and a connection whose queue is full drops itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias

from velocity.realtime.auth import Claims
from velocity.realtime.frames import PRESENCE_DIFF, TOPIC_PREFIX, Broadcast, Frame
from velocity.realtime.presence import Meta, Presence, PresenceDiff
from velocity.realtime.serializers import Serializer

logger = logging.getLogger(__name__)

Listener: TypeAlias = Callable[[str, Any], None]
"""Called with ``(event, payload)`` of a broadcast; ``payload`` is a JSON value, or ``bytes``."""


class Peer(Protocol):
    """The sending side of one connection, as channels see it."""

    @property
    def serializer(self) -> Serializer: ...

    def push(self, data: str | bytes) -> None:
        """Queue an encoded frame; never blocks (a full queue drops the connection)."""
        ...


@dataclass(eq=False, slots=True)
class Subscription:
    peer: Peer
    channel: Channel
    join_ref: str | None
    echo_self: bool
    ack: bool
    presence_key: str
    claims: Claims
    token: str | None
    expiry: asyncio.Task[None] | None = None
    # Ends this subscription as the server does (a ``system`` error, then ``phx_close``).
    end: Callable[[str], None] | None = None

    @property
    def wire_topic(self) -> str:
        return self.channel.wire_topic

    def send(self, event: str, payload: Any, *, ref: str | None = None) -> None:
        frame = Frame(self.join_ref, ref, self.wire_topic, event, payload)
        self.peer.push(self.peer.serializer.encode(frame))


class Taps:
    """Listeners inside the server process: each sees every broadcast on its topic, public or private,
    inline and in order, without a connection or a queue. They must not block."""

    def __init__(self) -> None:
        self._by_topic: dict[str, list[Listener]] = {}

    def add(self, topic: str, listener: Listener) -> Callable[[], None]:
        self._by_topic.setdefault(topic, []).append(listener)

        def remove() -> None:
            listeners = self._by_topic.get(topic, [])
            if listener in listeners:
                listeners.remove(listener)
            if not listeners:
                self._by_topic.pop(topic, None)

        return remove

    def notify(self, topic: str, broadcast: Broadcast) -> None:
        for listener in list(self._by_topic.get(topic, ())):
            try:
                listener(broadcast.event, broadcast.payload)
            except Exception:
                logger.exception("realtime: a listener of %s failed", topic)


class Channel:
    def __init__(self, topic: str, private: bool, taps: Taps | None = None) -> None:
        self.topic = topic
        self.private = private
        self._taps = taps
        self.wire_topic = TOPIC_PREFIX + topic
        self.presence = Presence()
        # A dict keeps subscribers in join order, which keeps delivery order stable in tests and logs.
        self._subscribers: dict[Subscription, None] = {}

    def __len__(self) -> int:
        return len(self._subscribers)

    def __iter__(self) -> Iterator[Subscription]:
        return iter(list(self._subscribers))

    def add(self, subscription: Subscription) -> None:
        self._subscribers[subscription] = None

    def discard(self, subscription: Subscription) -> None:
        self._subscribers.pop(subscription, None)

    def fan_out(self, broadcast: Broadcast, sender: Subscription | None = None) -> int:
        """Deliver to every subscriber (the sender only if it joined with ``self``); return how many."""
        if self._taps is not None:
            self._taps.notify(self.topic, broadcast)
        delivered = 0
        for subscription in self:
            if subscription is sender and not subscription.echo_self:
                continue
            serializer = subscription.peer.serializer
            if serializer.vsn not in broadcast.encoded:
                broadcast.encoded[serializer.vsn] = serializer.encode_broadcast(self.wire_topic, broadcast)
            data = broadcast.encoded[serializer.vsn]
            if data is not None:
                subscription.peer.push(data)
                delivered += 1
        return delivered

    def track(self, subscription: Subscription, meta: Meta) -> None:
        self._push_diff(self.presence.track(subscription.presence_key, subscription, meta))

    def untrack(self, subscription: Subscription) -> None:
        diff = self.presence.untrack(subscription.presence_key, subscription)
        if diff is not None:
            self._push_diff(diff)

    def _push_diff(self, diff: PresenceDiff) -> None:
        # Fastlane, like a broadcast: no join_ref, no ref; one encoding per serializer version.
        frame = Frame(None, None, self.wire_topic, PRESENCE_DIFF, diff)
        encoded: dict[str, str | bytes] = {}
        for subscription in self:
            serializer = subscription.peer.serializer
            if serializer.vsn not in encoded:
                encoded[serializer.vsn] = serializer.encode(frame)
            subscription.peer.push(encoded[serializer.vsn])


class Channels:
    """Every live channel by (topic, private); a channel exists while it has subscribers."""

    def __init__(self) -> None:
        self._channels: dict[tuple[str, bool], Channel] = {}
        self.taps = Taps()

    def __len__(self) -> int:
        return len(self._channels)

    def get(self, topic: str, private: bool) -> Channel | None:
        return self._channels.get((topic, private))

    def subscriptions(self) -> int:
        return sum(len(channel) for channel in self._channels.values())

    def every_subscription(self) -> list[Subscription]:
        return [subscription for channel in self._channels.values() for subscription in channel]

    def join(self, topic: str, private: bool) -> Channel:
        channel = self._channels.get((topic, private))
        if channel is None:
            channel = self._channels[(topic, private)] = Channel(topic, private, self.taps)
        return channel

    def leave(self, subscription: Subscription) -> None:
        """Remove a subscription: stop its expiry timer, announce its presence leave, drop empty channels."""
        if subscription.expiry is not None:
            subscription.expiry.cancel()
            subscription.expiry = None
        channel = subscription.channel
        channel.discard(subscription)
        channel.untrack(subscription)
        if not len(channel) and self._channels.get((channel.topic, channel.private)) is channel:
            del self._channels[(channel.topic, channel.private)]
