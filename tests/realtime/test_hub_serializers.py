"""The two serializers, checked against frames recorded from the official clients."""

from __future__ import annotations

import json
from typing import Any

import pytest
from realtime.message import BroadcastMessage, ServerMessageAdapter

from velocity.realtime.frames import Broadcast, Frame, FrameError
from velocity.realtime.presence import Presence
from velocity.realtime.serializers import ARRAYS_V2, JSON_V1, serializer_for

TOPIC = "realtime:preview:proj-1"
# realtime-js 2.109.0, vsn 2.0.0: channel.send({type: "broadcast", event: "file_changed", payload: {...}})
JS_KIND_3_JSON = bytes.fromhex(
    "030101170c000136377265616c74696d653a707265766965773a70726f6a2d3166696c655f6368616e6765647b2270617468"
    "223a227372632f4170702e747378222c22636f6e74656e74223a2278227d"
)
# The same with an ArrayBuffer payload (encoding 0, bytes 01 02 03).
JS_KIND_3_BINARY = bytes.fromhex(
    "0301011703000036387265616c74696d653a707265766965773a70726f6a2d3162696e010203"
)


def test_a_recorded_js_binary_broadcast_push_decodes_to_its_refs_topic_event_and_json_payload() -> None:
    """Kind 3 with JSON encoding yields the join_ref, ref, topic, event and the parsed payload."""
    frame = ARRAYS_V2.decode(JS_KIND_3_JSON)
    assert (frame.join_ref, frame.ref, frame.topic, frame.event) == ("6", "7", TOPIC, "broadcast")
    assert frame.binary is not None
    assert frame.binary.event == "file_changed"
    assert frame.binary.payload == {"path": "src/App.tsx", "content": "x"}


def test_a_recorded_js_arraybuffer_broadcast_decodes_to_raw_bytes() -> None:
    """Kind 3 with binary encoding keeps the payload as bytes."""
    frame = ARRAYS_V2.decode(JS_KIND_3_BINARY)
    assert frame.binary is not None
    assert (frame.binary.event, frame.binary.payload) == ("bin", b"\x01\x02\x03")


def test_a_binary_broadcast_goes_to_v2_clients_as_the_kind_4_frame_realtime_js_decodes() -> None:
    """The kind-4 bytes match the frame checked by hand against realtime-js 2.109.0."""
    broadcast = ARRAYS_V2.decode(JS_KIND_3_JSON).binary
    assert broadcast is not None
    expected = (
        bytes.fromhex("04170c0001")
        + TOPIC.encode()
        + b"file_changed"
        + b'{"path":"src/App.tsx","content":"x"}'
    )
    assert ARRAYS_V2.encode_broadcast(TOPIC, broadcast) == expected


def test_a_binary_broadcast_goes_to_v1_clients_as_json_and_raw_bytes_not_at_all() -> None:
    """V1 sockets get JSON-encoded broadcasts as text; raw-binary ones are dropped, as on the real server."""
    json_broadcast = ARRAYS_V2.decode(JS_KIND_3_JSON).binary
    raw_broadcast = ARRAYS_V2.decode(JS_KIND_3_BINARY).binary
    assert json_broadcast is not None
    assert raw_broadcast is not None
    text = JSON_V1.encode_broadcast(TOPIC, json_broadcast)
    assert isinstance(text, str)
    assert json.loads(text)["payload"]["payload"] == {"path": "src/App.tsx", "content": "x"}
    assert JSON_V1.encode_broadcast(TOPIC, raw_broadcast) is None


def test_v1_frames_carry_exactly_topic_event_payload_and_ref() -> None:
    """The Python client drops frames with other keys, or without ``ref``."""
    push = json.loads(JSON_V1.encode(Frame("1", None, TOPIC, "presence_state", {})))
    assert push == {"topic": TOPIC, "event": "presence_state", "payload": {}, "ref": None}


@pytest.mark.parametrize(
    "frame",
    [
        Frame("1", "1", TOPIC, "phx_reply", {"status": "ok", "response": {"postgres_changes": []}}),
        Frame("1", "2", TOPIC, "phx_reply", {"status": "error", "response": {"reason": "unmatched topic"}}),
        Frame(None, None, "phoenix", "phx_reply", {"status": "ok", "response": {}}),
        Frame("1", None, TOPIC, "presence_state", {"k": {"metas": [{"phx_ref": "a"}]}}),
        Frame(None, None, TOPIC, "presence_diff", {"joins": {}, "leaves": {}}),
        Frame(
            "1",
            None,
            TOPIC,
            "system",
            {"extension": "system", "status": "error", "message": "m", "channel": "c"},
        ),
        Frame("1", "1", TOPIC, "phx_close", {}),
    ],
    ids=[
        "join-reply",
        "error-reply",
        "heartbeat-reply",
        "presence-state",
        "presence-diff",
        "system",
        "close",
    ],
)
def test_every_v1_frame_the_hub_sends_parses_with_the_python_clients_own_model(frame: Frame) -> None:
    """``realtime.message.ServerMessageAdapter`` accepts what the hub sends."""
    ServerMessageAdapter.validate_json(JSON_V1.encode(frame))


@pytest.mark.parametrize("meta", [None, {"id": "m-1"}])
def test_a_v1_broadcast_parses_with_the_python_clients_own_model(meta: dict[str, Any] | None) -> None:
    """Broadcasts are spliced by hand, so check them against the client's parser too."""
    text = JSON_V1.encode_broadcast(TOPIC, Broadcast(event="log", payload={"line": "ok ✓"}, meta=meta))
    assert isinstance(text, str)
    message = ServerMessageAdapter.validate_json(text)
    assert isinstance(message, BroadcastMessage)
    assert message.payload["payload"] == {"line": "ok ✓"}
    assert message.payload.get("meta") == meta


def test_a_json_broadcast_goes_to_v2_clients_as_a_fastlane_text_array() -> None:
    """``[null, null, topic, "broadcast", {type, event, payload}]``."""
    text = ARRAYS_V2.encode_broadcast(TOPIC, Broadcast(event="status", payload={"state": "ready"}))
    assert isinstance(text, str)
    body = {"type": "broadcast", "event": "status", "payload": {"state": "ready"}}
    assert json.loads(text) == [None, None, TOPIC, "broadcast", body]


@pytest.mark.parametrize(
    ("vsn", "chosen"),
    [(None, "1.0.0"), ("", "1.0.0"), ("1.0.0", "1.0.0"), ("2.0.0", "2.0.0"), ("2.0.3", "2.0.0"),
     ("3.0.0", None), ("1.1.0", None), ("2.0", None), ("latest", None)],
)  # fmt: skip
def test_the_serializer_follows_vsn_as_phoenix_matches_it(vsn: str | None, chosen: str | None) -> None:
    """``~> 1.0.0`` and ``~> 2.0.0``; no vsn is 1.0.0."""
    serializer = serializer_for(vsn)
    assert (serializer.vsn if serializer else None) == chosen


@pytest.mark.parametrize(
    ("serializer", "data"),
    [
        (JSON_V1, "{not json"),
        (JSON_V1, "[1, 2, 3, 4, 5]"),
        (JSON_V1, '{"topic": 1, "event": "x", "payload": {}, "ref": null}'),
        (JSON_V1, '{"topic": "t", "event": "x", "payload": {}, "ref": [1]}'),
        (JSON_V1, b"\x03\x00"),
        (ARRAYS_V2, "[null, null, 't', 'x']"),
        (ARRAYS_V2, '[null, "1", "t", "x"]'),
        (ARRAYS_V2, '{"topic": "t"}'),
        (ARRAYS_V2, b""),
        (ARRAYS_V2, b"\x09\x00\x00\x00\x00\x00\x00"),
        (ARRAYS_V2, JS_KIND_3_JSON[:20]),
        (ARRAYS_V2, JS_KIND_3_JSON[:-1]),
        (ARRAYS_V2, JS_KIND_3_JSON[:6] + b"\x07" + JS_KIND_3_JSON[7:]),
        (JSON_V1, '{"topic": "t", "event": "x", "payload": {"n": NaN}, "ref": null}'),
        (ARRAYS_V2, JS_KIND_3_JSON[: -len(b'"x"}')] + b'Infinity}'),
        (ARRAYS_V2, JS_KIND_3_JSON[: -len(b'{"path":"src/App.tsx","content":"x"}')] + '{"a":1}'.encode("utf-16")),
    ],
    ids=["bad-json", "v1-array", "topic-not-string", "ref-list", "v1-binary", "bad-json-v2", "short-array",
         "v2-object", "empty-binary", "unknown-kind", "short-header", "short-json", "unknown-encoding",
         "v1-nan", "v2-infinity", "v2-utf16"],
)  # fmt: skip
def test_malformed_frames_raise_a_frame_error_with_a_reason(serializer: Any, data: str | bytes) -> None:
    """Every malformed shape is a ``FrameError`` (an error reply), never another exception."""
    with pytest.raises(FrameError) as caught:
        serializer.decode(data)
    assert caught.value.reason.split(":")[0] in {"MalformedMessage", "MalformedBroadcast"}


def test_a_malformed_binary_broadcast_keeps_its_topic_and_ref_for_the_error_reply() -> None:
    """A broken payload behind a readable header still gets its reply routed to the push."""
    with pytest.raises(FrameError) as caught:
        ARRAYS_V2.decode(JS_KIND_3_JSON[:-1])
    assert (caught.value.topic, caught.value.ref) == (TOPIC, "7")


def test_presence_re_track_leaves_the_old_meta_and_joins_the_new_one_with_phx_ref_prev() -> None:
    """Phoenix Presence's update diff, and a clean leave on untrack."""
    presence = Presence()
    owner = object()
    first = presence.track("agent", owner, {"state": "installing"})
    old = first["joins"]["agent"]["metas"][0]
    second = presence.track("agent", owner, {"state": "ready"})
    assert second["leaves"] == {"agent": {"metas": [old]}}
    assert second["joins"]["agent"]["metas"][0]["phx_ref_prev"] == old["phx_ref"]
    assert presence.state()["agent"]["metas"][0]["state"] == "ready"
    assert presence.untrack("agent", owner) is not None
    assert presence.state() == {}
    assert presence.untrack("agent", owner) is None
