"""On Fly the router answers a preview request with a replay: Fly's proxy sends the request on to the
preview's machine and drops the router's answer.

The JSON form (``Content-Type: application/vnd.fly.replay+json``, Fly's dynamic request routing docs)
is used rather than the ``fly-replay`` header, because only it can change the replayed request: Fly
replays the *original* request, so what the gate removed (our session cookie, our bearer tokens)
would otherwise reach the preview's code. Its ``transform`` deletes and sets those headers, and sets
the machine's origin secret, which the agent requires of every request. ``timeout`` bounds the
replay; with ``fallback: force_self`` a failed replay comes back to the router marked
``fly-replay-failed``, and it answers 503 instead of replaying again.

Fly's proxy cannot replay a request over 1 MB (docs); the router carries those itself, over the
private network, as it does everything locally.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import Scope, Send

from velocity.domain.agent_contract import ORIGIN_HEADER

REPLAY_CONTENT_TYPE = b"application/vnd.fly.replay+json"
MAX_REPLAY_BODY_BYTES = 1_000_000  # "requests larger than 1 MB cannot be replayed"
REPLAY_TIMEOUT = "10s"
# Headers whose value the gate may change: the replay carries the gate's version of each.
_GUARDED = (b"authorization", b"cookie")


def replayable(scope: Scope) -> bool:
    """Whether Fly's proxy can replay this request: a websocket upgrade, or a body known to be at
    most 1 MB (a chunked body's size is not known up front)."""
    if scope["type"] != "http":
        return True
    headers = dict(scope.get("headers", ()))
    if b"transfer-encoding" in headers:
        return False
    length = headers.get(b"content-length", b"0")
    return length.isdigit() and int(length) <= MAX_REPLAY_BODY_BYTES


def fly_replay(
    *, app: str, machine_id: str, original: Scope, admitted: Scope, origin_secret: str
) -> dict[str, Any]:
    """The replay of ``original`` to ``machine_id``, changed into the request the gate ``admitted``."""
    delete: list[str] = []
    set_headers = [{"name": ORIGIN_HEADER, "value": origin_secret}]
    before, after = _values(original), _values(admitted)
    for name in _GUARDED:
        if before.get(name) == after.get(name):
            continue
        delete.append(name.decode())
        if name in after:
            set_headers.append({"name": name.decode(), "value": after[name].decode("latin-1")})
    if ORIGIN_HEADER.encode() in before:
        delete.append(ORIGIN_HEADER)  # a client's own copy never passes; ours is set
    return {
        "app": app,
        "instance": machine_id,
        "timeout": REPLAY_TIMEOUT,
        "fallback": "force_self",
        "transform": {"delete_headers": delete, "set_headers": set_headers},
    }


async def replay_answer(scope: Scope, send: Send, replay: dict[str, Any]) -> None:
    """The answer Fly's proxy acts on; its status and text are for a client that reached the router
    without Fly's proxy in front (nobody else sees them)."""
    body = json.dumps(replay).encode()
    headers = [(b"content-type", REPLAY_CONTENT_TYPE), (b"cache-control", b"no-store")]
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 409, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    elif "websocket.http.response" in scope.get("extensions", {}):
        # Fly replays the upgrade request itself, so the replay goes on an HTTP answer to it.
        await send({"type": "websocket.http.response.start", "status": 409, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1011, "reason": "fly-replay needs Fly's proxy"})


def _values(scope: Scope) -> dict[bytes, bytes]:
    """Header values by name, repeated ones joined as a proxy would (cookies with ``; ``)."""
    found: dict[bytes, list[bytes]] = {}
    for name, value in scope.get("headers", ()):
        found.setdefault(name, []).append(value)
    return {name: (b"; " if name == b"cookie" else b", ").join(values) for name, values in found.items()}
