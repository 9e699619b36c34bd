"""The Phoenix channel protocol for one connection: joins, leaves, broadcasts, presence, token refresh.

Every frame gets exactly the answer the Realtime server gives, because the official clients depend on
it: a heartbeat reply with the same ref; a join reply echoing ``postgres_changes`` with integer ids;
broadcast replies only with ``ack``; no reply to ``access_token``. What the real server would answer
by crashing the channel (bad JSON, unknown events, oversize frames) gets an error reply instead, and
the connection and every other channel carry on.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import zlib
from typing import Any

from velocity.domain.errors import Forbidden, Unauthorized
from velocity.realtime.auth import Claims, expires_at, forbidden_reason, is_opaque_key
from velocity.realtime.channels import Subscription
from velocity.realtime.connection import Connection
from velocity.realtime.core import HubCore
from velocity.realtime.frames import (
    ACCESS_TOKEN,
    BROADCAST,
    CLOSE,
    HEARTBEAT,
    JOIN,
    LEAVE,
    PHOENIX_TOPIC,
    PRESENCE,
    PRESENCE_STATE,
    REPLY,
    SYSTEM,
    TOPIC_PREFIX,
    Broadcast,
    Frame,
    FrameError,
    dumps,
)

logger = logging.getLogger(__name__)

_MAX_TOPIC_BYTES = 255  # a V2 binary frame carries the topic length in one byte


class Session:
    def __init__(self, core: HubCore, connection: Connection, *, token: str, claims: Claims) -> None:
        self._core = core
        self._conn = connection
        self._token = token  # the connect-time key: what a join without its own token stands on
        self._claims = claims
        self._subscriptions: dict[str, Subscription] = {}

    async def handle(self, data: str | bytes) -> None:
        """Act on one inbound frame; never raises, so one bad frame cannot end the connection."""
        frame: Frame | None = None
        try:
            frame = self._decode(data)
            await self._dispatch(frame)
        except FrameError as exc:
            self._core.counters.protocol_errors += 1
            logger.info("realtime: %r sent a bad frame: %s", self._conn, exc.reason)
            where = frame or Frame(None, exc.ref, exc.topic or PHOENIX_TOPIC, "", None)
            self._reply(where, "error", {"reason": exc.reason})
        except Exception:
            self._core.counters.protocol_errors += 1
            logger.exception("realtime: %r: frame handling failed", self._conn)
            if frame is not None:
                self._reply(
                    frame, "error", {"reason": "InternalError: the hub failed to handle this message"}
                )

    def _decode(self, data: str | bytes) -> Frame:
        limit = self._core.limits.max_frame_bytes
        # Counting UTF-8 bytes costs a copy; a text frame of fewer than limit/4 characters cannot exceed it.
        size = len(data) if isinstance(data, bytes) or len(data) * 4 <= limit else len(data.encode())
        too_large = f"PayloadTooLarge: a frame of {size} bytes exceeds the limit of {limit}"
        try:
            frame = self._conn.serializer.decode(data)
        except FrameError as exc:
            if size > limit:
                raise FrameError(too_large, topic=exc.topic, ref=exc.ref) from exc
            raise
        if size > limit:
            # Decoded anyway (the ASGI server's own limit bounds the cost) so the reply reaches the push.
            raise FrameError(too_large, topic=frame.topic, ref=frame.ref)
        return frame

    def close(self) -> None:
        """Leave every channel (presence leaves go out to the others)."""
        for subscription in list(self._subscriptions.values()):
            self._forget(subscription)

    async def _dispatch(self, frame: Frame) -> None:
        if frame.topic == PHOENIX_TOPIC:
            if frame.event != HEARTBEAT:
                raise FrameError(f"UnknownEvent: `{frame.event}` on topic phoenix")
            self._reply(frame, "ok", {})
            return
        if frame.event == JOIN:
            await self._join(frame)
            return
        subscription = self._subscriptions.get(frame.topic)
        if subscription is None:
            raise FrameError("unmatched topic")
        if frame.event == BROADCAST:
            self._broadcast(subscription, frame)
        elif frame.event == PRESENCE:
            self._presence(subscription, frame)
        elif frame.event == ACCESS_TOKEN:
            await self._refresh(subscription, frame.payload)
        elif frame.event == LEAVE:
            self._reply(frame, "ok", {})
            self._close_subscription(subscription)
        else:
            raise FrameError(f"UnknownEvent: `{frame.event}` is not a Realtime channel event")

    # --- join ---------------------------------------------------------------------------------------

    async def _join(self, frame: Frame) -> None:
        topic = _subtopic(frame.topic)
        payload: dict[str, Any] = frame.payload if isinstance(frame.payload, dict) else {"config": None}
        config = payload.get("config", {})
        if not isinstance(config, dict):
            raise FrameError("MalformedJoin: the join payload is {config: {...}, access_token?}")
        broadcast = _section(config, "broadcast")
        presence = _section(config, "presence")
        postgres_changes = config.get("postgres_changes") or []
        if not isinstance(postgres_changes, list) or not all(isinstance(b, dict) for b in postgres_changes):
            raise FrameError("MalformedJoin: `postgres_changes` must be a list of objects")
        replaced = self._subscriptions.get(frame.topic)
        if replaced is None and len(self._subscriptions) >= self._core.limits.max_channels_per_connection:
            raise FrameError("ChannelRateLimitReached: Too many channels")

        token, claims = await self._claims_for(payload.get("access_token") or payload.get("user_token"))
        try:
            await self._core.authorizer(claims, topic)
        except Forbidden as exc:
            raise FrameError(forbidden_reason(topic, exc)) from exc

        if replaced is not None:
            # Phoenix closes a duplicate join's predecessor before it answers the new one.
            self._close_subscription(replaced)
        key = presence.get("key")
        subscription = Subscription(
            peer=self._conn,
            channel=self._core.channels.join(topic, bool(config.get("private", False))),
            join_ref=frame.join_ref or frame.ref,
            echo_self=bool(broadcast.get("self", False)),
            ack=bool(broadcast.get("ack", False)),
            presence_key=key if isinstance(key, str) and key else str(uuid.uuid4()),
            claims=claims,
            token=token,
        )
        subscription.end = lambda message: self._end(subscription, message)
        subscription.channel.add(subscription)
        self._subscriptions[frame.topic] = subscription
        self._schedule_expiry(subscription)
        bindings = [{**binding, "id": _binding_id(binding)} for binding in postgres_changes]
        self._reply(frame, "ok", {"postgres_changes": bindings})
        if presence.get("enabled"):
            subscription.send(PRESENCE_STATE, subscription.channel.presence.state())
        logger.debug("realtime: %r joined %s as %s", self._conn, frame.topic, claims.get("role"))

    async def _claims_for(self, token: Any) -> tuple[str, Claims]:
        # No token, or an opaque API key, means "the connection's own key", as on the real server.
        if not isinstance(token, str) or not token or is_opaque_key(token) or token == self._token:
            return self._token, self._claims
        try:
            return token, await self._core.verifier(token)
        except Unauthorized as exc:
            raise FrameError(f"InvalidJWTToken: {exc.message}") from exc

    # --- events on a joined channel -----------------------------------------------------------------

    def _broadcast(self, subscription: Subscription, frame: Frame) -> None:
        broadcast = frame.binary or Broadcast.from_map(frame.payload, topic=frame.topic, ref=frame.ref)
        self._core.counters.broadcasts += 1
        subscription.channel.fan_out(broadcast, sender=subscription)
        if subscription.ack:
            self._reply(frame, "ok", {})

    def _presence(self, subscription: Subscription, frame: Frame) -> None:
        payload = frame.payload if isinstance(frame.payload, dict) else {}
        event = payload.get("event")
        if event == "track":
            meta = payload.get("payload", {})
            if not isinstance(meta, dict):
                raise FrameError("Presence track payload must be a map")
            self._reply(frame, "ok", {})
            subscription.channel.track(subscription, meta)
        elif event == "untrack":
            self._reply(frame, "ok", {})
            subscription.channel.untrack(subscription)
        else:
            raise FrameError("UnknownEvent: presence events are `track` and `untrack`")

    async def _refresh(self, subscription: Subscription, payload: Any) -> None:
        token = payload.get("access_token") if isinstance(payload, dict) else None
        # The server answers nothing, and ignores null, unchanged and opaque tokens.
        if not isinstance(token, str) or not token or is_opaque_key(token) or token == subscription.token:
            return
        try:
            claims = await self._core.verifier(token)
        except Unauthorized as exc:
            self._end(subscription, exc.message)
            return
        try:
            await self._core.authorizer(claims, subscription.channel.topic)
        except Forbidden:
            topic = subscription.channel.topic
            self._end(subscription, f"You no longer have permission to read from this Channel topic: {topic}")
            return
        subscription.claims, subscription.token = claims, token
        self._schedule_expiry(subscription)

    # --- ending a subscription ----------------------------------------------------------------------

    def _schedule_expiry(self, subscription: Subscription) -> None:
        if subscription.expiry is not None:
            subscription.expiry.cancel()
            subscription.expiry = None
        exp = expires_at(subscription.claims)
        if exp is not None:
            subscription.expiry = asyncio.create_task(self._expire_at(subscription, exp))

    async def _expire_at(self, subscription: Subscription, exp: float) -> None:
        clock = self._core.clock
        await clock.sleep(max(0.0, exp - clock.now().timestamp()))
        subscription.expiry = None  # this task is ending: nothing left to cancel
        ago = max(0, round(clock.now().timestamp() - exp))
        self._end(subscription, f"Token has expired {ago} seconds ago")

    def _end(self, subscription: Subscription, message: str) -> None:
        """Stop a channel the way the real server does: a ``system`` error, then ``phx_close``."""
        logger.info("realtime: %r leaves %s: %s", self._conn, subscription.wire_topic, message)
        system = {
            "extension": "system",
            "status": "error",
            "message": message,
            "channel": subscription.channel.topic,
        }
        subscription.send(SYSTEM, system)
        self._close_subscription(subscription)

    def _close_subscription(self, subscription: Subscription) -> None:
        subscription.send(CLOSE, {}, ref=subscription.join_ref)
        self._forget(subscription)

    def _forget(self, subscription: Subscription) -> None:
        if self._subscriptions.get(subscription.wire_topic) is subscription:
            del self._subscriptions[subscription.wire_topic]
        self._core.channels.leave(subscription)

    def _reply(self, frame: Frame, status: str, response: dict[str, Any]) -> None:
        reply = Frame(frame.join_ref, frame.ref, frame.topic, REPLY, {"status": status, "response": response})
        self._conn.push(self._conn.serializer.encode(reply))


def _subtopic(wire_topic: str) -> str:
    if not wire_topic.startswith(TOPIC_PREFIX) or wire_topic == TOPIC_PREFIX:
        raise FrameError("TopicNameRequired: You must provide a topic name")
    if len(wire_topic.encode()) > _MAX_TOPIC_BYTES:
        raise FrameError(f"TopicNameTooLong: a topic is at most {_MAX_TOPIC_BYTES} bytes")
    return wire_topic[len(TOPIC_PREFIX) :]


def _section(config: dict[str, Any], name: str) -> dict[str, Any]:
    value = config.get(name) or {}
    if not isinstance(value, dict):
        raise FrameError(f"MalformedJoin: `config.{name}` must be an object")
    return value


def _binding_id(binding: dict[str, Any]) -> int:
    # Stable per binding, like the server's :erlang.phash2(params); clients only need an integer.
    return zlib.crc32(dumps(sorted(binding.items())).encode())
