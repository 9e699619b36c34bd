"""The two Phoenix serializers the official clients speak, chosen per connection by ``vsn``.

* ``1.0.0`` (the Python client): JSON objects. Server frames carry exactly ``topic, event, payload,
  ref``, with ``ref`` always present (null for pushes): the Python client drops anything else.
* ``2.0.0`` (realtime-js since 2.81): JSON arrays ``[join_ref, ref, topic, event, payload]``, plus
  binary frames for user broadcasts: kind 3 from the client, kind 4 to the client.

Binary layouts are in ``docs/protocol.md`` and in the Realtime server's ``V2Serializer``.
"""

from __future__ import annotations

import struct
from typing import Any, Final, Protocol

from velocity.realtime.frames import (
    BROADCAST,
    ENCODING_BINARY,
    ENCODING_JSON,
    KIND_USER_BROADCAST,
    KIND_USER_BROADCAST_PUSH,
    Broadcast,
    Frame,
    FrameError,
    dumps,
    loads,
)

V1: Final = "1.0.0"
V2: Final = "2.0.0"
_MAX_FIELD: Final = 255  # every length in a binary header is one byte


class Serializer(Protocol):
    vsn: str

    def decode(self, data: str | bytes) -> Frame: ...

    def encode(self, frame: Frame) -> str | bytes: ...

    def encode_broadcast(self, topic: str, broadcast: Broadcast) -> str | bytes | None:
        """The wire form of a user broadcast on ``topic``, or None when this version cannot carry it."""
        ...


def serializer_for(vsn: str | None) -> Serializer | None:
    """Phoenix matches ``~> 1.0.0`` and ``~> 2.0.0``; no ``vsn`` means 1.0.0."""
    if vsn is None or vsn == "" or _same_minor(vsn, V1):
        return JSON_V1
    if _same_minor(vsn, V2):
        return ARRAYS_V2
    return None


def _same_minor(vsn: str, base: str) -> bool:
    parts = vsn.split(".")
    return len(parts) == 3 and parts[2].isdigit() and vsn.startswith(base[:4])


def _ref(value: Any, what: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise FrameError(f"MalformedMessage: `{what}` must be a string or null")


def _loads(text: str | bytes) -> Any:
    try:
        return loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FrameError(f"MalformedMessage: not JSON ({exc})") from exc


def _checked(join_ref: Any, ref: Any, topic: Any, event: Any, payload: Any) -> Frame:
    if not isinstance(topic, str) or not isinstance(event, str):
        raise FrameError("MalformedMessage: `topic` and `event` must be strings")
    return Frame(
        _ref(join_ref, "join_ref"), _ref(ref, "ref"), topic, event, {} if payload is None else payload
    )


class JsonV1:
    vsn = V1

    def decode(self, data: str | bytes) -> Frame:
        if isinstance(data, bytes):
            raise FrameError("MalformedMessage: vsn 1.0.0 carries JSON text frames only")
        message = _loads(data)
        if not isinstance(message, dict):
            raise FrameError("MalformedMessage: a vsn 1.0.0 message is a JSON object")
        frame = _checked(
            message.get("join_ref"), message.get("ref"), message.get("topic"), message.get("event"),
            message.get("payload"),
        )  # fmt: skip
        return frame

    def encode(self, frame: Frame) -> str:
        # V1 never carries join_ref to the client (Phoenix's encode_v1_fields_only).
        return dumps({"topic": frame.topic, "event": frame.event, "payload": frame.payload, "ref": frame.ref})

    def encode_broadcast(self, topic: str, broadcast: Broadcast) -> str | None:
        if broadcast.is_binary:
            return None  # the real server drops raw-binary broadcasts for V1 sockets too
        return (
            f'{{"topic":{dumps(topic)},"event":"broadcast","payload":{_broadcast_map(broadcast)},"ref":null}}'
        )


class ArraysV2:
    vsn = V2

    def decode(self, data: str | bytes) -> Frame:
        if isinstance(data, bytes):
            return _decode_user_broadcast_push(data)
        message = _loads(data)
        if not isinstance(message, list) or len(message) != 5:
            raise FrameError(
                "MalformedMessage: a vsn 2.0.0 text message is [join_ref, ref, topic, event, payload]"
            )
        return _checked(*message)

    def encode(self, frame: Frame) -> str:
        return dumps([frame.join_ref, frame.ref, frame.topic, frame.event, frame.payload])

    def encode_broadcast(self, topic: str, broadcast: Broadcast) -> str | bytes | None:
        # A broadcast that arrived as binary goes out as binary (kind 4), as the Realtime server does;
        # one that arrived as JSON text goes out as a text array. realtime-js decodes both.
        if broadcast.arrived_binary:
            encoded = _encode_user_broadcast(topic, broadcast)
            if encoded is not None or broadcast.is_binary:
                return encoded
        return f'[null,null,{dumps(topic)},"broadcast",{_broadcast_map(broadcast)}]'


def _broadcast_map(broadcast: Broadcast) -> str:
    # Spliced by hand so a payload that arrived as JSON bytes is forwarded without parsing it again.
    meta = f',"meta":{dumps(broadcast.meta)}' if broadcast.meta else ""
    payload = broadcast.payload_json_bytes().decode()
    return f'{{"type":"broadcast","event":{dumps(broadcast.event)},"payload":{payload}{meta}}}'


def _decode_user_broadcast_push(data: bytes) -> Frame:
    """Kind 3: ``3, join_ref_len, ref_len, topic_len, event_len, meta_len, encoding``, strings, payload."""
    if len(data) < 7 or data[0] != KIND_USER_BROADCAST_PUSH:
        kind = data[0] if data else None
        raise FrameError(f"MalformedMessage: unsupported binary frame kind {kind}; clients send kind 3 only")
    lengths = data[1:6]
    encoding = data[6]
    offset = 7
    fields: list[str] = []
    for length in lengths:
        chunk = data[offset : offset + length]
        if len(chunk) != length:
            raise FrameError("MalformedMessage: binary frame shorter than its header says")
        try:
            fields.append(chunk.decode())
        except UnicodeDecodeError as exc:
            raise FrameError("MalformedMessage: binary frame header is not UTF-8") from exc
        offset += length
    join_ref, ref, topic, event, _client_meta = fields
    body = data[offset:]
    refs = (join_ref or None, ref or None)
    if not event:
        raise FrameError("MalformedBroadcast: `event` must be a non-empty string", topic=topic, ref=refs[1])
    if encoding == ENCODING_JSON:
        broadcast = Broadcast(event=event, payload=_loads_in(body, topic, refs[1]), received_json=bytes(body))
    elif encoding == ENCODING_BINARY:
        broadcast = Broadcast(event=event, payload=bytes(body))
    else:
        raise FrameError(f"MalformedBroadcast: unknown payload encoding {encoding}", topic=topic, ref=refs[1])
    return Frame(refs[0], refs[1], topic, BROADCAST, None, binary=broadcast)


def _loads_in(body: bytes, topic: str, ref: str | None) -> Any:
    try:
        return loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FrameError(f"MalformedBroadcast: payload is not JSON ({exc})", topic=topic, ref=ref) from exc


def _encode_user_broadcast(topic: str, broadcast: Broadcast) -> bytes | None:
    """Kind 4: ``4, topic_len, event_len, meta_len, encoding``, strings, payload; None if one is too long."""
    topic_b, event_b = topic.encode(), broadcast.event.encode()
    meta_b = dumps(broadcast.meta).encode() if broadcast.meta else b""
    if max(len(topic_b), len(event_b), len(meta_b)) > _MAX_FIELD:
        return None
    if isinstance(broadcast.payload, bytes):
        encoding, body = ENCODING_BINARY, broadcast.payload
    else:
        encoding, body = ENCODING_JSON, broadcast.payload_json_bytes()
    header = struct.pack("5B", KIND_USER_BROADCAST, len(topic_b), len(event_b), len(meta_b), encoding)
    return b"".join((header, topic_b, event_b, meta_b, body))


JSON_V1: Final[Serializer] = JsonV1()
ARRAYS_V2: Final[Serializer] = ArraysV2()
