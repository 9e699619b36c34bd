"""The hub's view of one Phoenix channel message, whichever serializer carried it.

A ``Frame`` is the five fields every Phoenix message has. A ``Broadcast`` is the body of a user
broadcast; it remembers how it arrived (a JSON map, or a binary V2 frame with a JSON or raw payload)
so that each subscriber's serializer can encode it once per fan-out, not once per subscriber.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final

from velocity.domain.errors import BadRequest

PHOENIX_TOPIC: Final = "phoenix"
TOPIC_PREFIX: Final = "realtime:"

# Client to server.
HEARTBEAT: Final = "heartbeat"
JOIN: Final = "phx_join"
LEAVE: Final = "phx_leave"
BROADCAST: Final = "broadcast"
PRESENCE: Final = "presence"
ACCESS_TOKEN: Final = "access_token"

# Server to client.
REPLY: Final = "phx_reply"
CLOSE: Final = "phx_close"
PRESENCE_STATE: Final = "presence_state"
PRESENCE_DIFF: Final = "presence_diff"
SYSTEM: Final = "system"

# Binary V2 frame kinds (byte 0).
KIND_USER_BROADCAST_PUSH: Final = 3
KIND_USER_BROADCAST: Final = 4
ENCODING_BINARY: Final = 0
ENCODING_JSON: Final = 1


class FrameError(BadRequest):
    """A frame the hub cannot act on; ``reason`` is the ``Code: message`` text sent back in the reply."""

    def __init__(self, reason: str, *, topic: str | None = None, ref: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.topic = topic
        self.ref = ref


@dataclass(frozen=True, slots=True)
class Frame:
    """One Phoenix message. ``binary`` is set when a V2 client sent a broadcast as a binary kind-3 frame."""

    join_ref: str | None
    ref: str | None
    topic: str
    event: str
    payload: Any
    binary: Broadcast | None = None


def dumps(value: Any) -> str:
    """Compact JSON, as the official servers send it (smaller frames, identical meaning)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads(data: str | bytes) -> Any:
    """Strict JSON from a client: UTF-8 only, and no ``NaN``/``Infinity``, which Python accepts and
    browsers' ``JSON.parse`` does not; forwarded as received, they would break every receiver."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    return json.loads(text, parse_constant=_no_constants)


@dataclass(eq=False, slots=True)
class Broadcast:
    """A user broadcast: the event name, the payload (JSON value or raw bytes) and optional metadata.

    ``received_json`` keeps the exact JSON bytes of a binary (kind 3) push: forwarding them needs no
    re-encoding, and marks the broadcast as one to forward in binary. ``encoded`` caches the wire form
    per serializer version for one fan-out.
    """

    event: str
    payload: Any
    meta: dict[str, Any] | None = None
    received_json: bytes | None = None
    encoded: dict[str, str | bytes | None] = field(default_factory=dict)
    _json: bytes | None = None

    @property
    def is_binary(self) -> bool:
        return isinstance(self.payload, bytes)

    @property
    def arrived_binary(self) -> bool:
        return self.is_binary or self.received_json is not None

    def payload_json_bytes(self) -> bytes:
        if self.received_json is not None:
            return self.received_json
        if self._json is None:
            self._json = dumps(self.payload).encode()
        return self._json

    @classmethod
    def from_map(cls, payload: Any, *, topic: str, ref: str | None) -> Broadcast:
        """Validate the ``{type, event, payload}`` map of a text broadcast push."""
        if not isinstance(payload, dict):
            raise FrameError("MalformedBroadcast: the payload must be a JSON object", topic=topic, ref=ref)
        event = payload.get("event")
        if not isinstance(event, str) or not event:
            raise FrameError("MalformedBroadcast: `event` must be a non-empty string", topic=topic, ref=ref)
        # Metadata is the server's to set (message ids, replay marks): a client's own is dropped.
        return cls(event=event, payload=payload.get("payload", {}))
