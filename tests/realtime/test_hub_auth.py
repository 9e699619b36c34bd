"""Who gets in: the key before the upgrade, tokens in joins and refreshes, expiry, the channel authorizer."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.realtime.hub_server import TOPIC, Served, StartHub
from tests.realtime.realtime_clients import kind
from tests.realtime.tokens import anon_key, mint, user_token
from velocity.clock import FakeClock
from velocity.domain.errors import Forbidden
from velocity.realtime import Claims

FOREIGN_KEY = mint({"role": "anon", "exp": 4102444800}, "not-the-hubs-secret-but-also-32-bytes-long")


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("vsn=1.0.0", "API key is missing"),
        ("apikey=&vsn=2.0.0", "API key is missing"),
        ("apikey=not-a-jwt&vsn=1.0.0", "The token provided is not a valid JWT"),
        (f"apikey={FOREIGN_KEY}", "Failed to validate JWT signature"),
        (f"apikey={mint({'role': 'anon', 'exp': 1})}", "Token has expired"),
    ],
    ids=["no-key", "empty-key", "not-a-jwt", "wrong-secret", "expired"],
)  # fmt: skip
async def test_a_bad_key_is_refused_before_the_upgrade_with_401_and_a_json_error(
    served: Served, query: str, error: str
) -> None:
    """The HTTP answer to the upgrade request is 401 ``{"error": ...}``, as Supabase Realtime's."""
    with pytest.raises(InvalidStatus) as refused:
        await connect(f"{served.ws_url}?{query}")
    response = refused.value.response
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json"
    assert response.body == f'{{"error":"{error}"}}'.encode()


async def test_an_unknown_serializer_version_is_refused_with_400(served: Served) -> None:
    """Only ``~> 1.0.0`` and ``~> 2.0.0`` exist."""
    with pytest.raises(InvalidStatus) as refused:
        await connect(f"{served.ws_url}?apikey={served.apikey}&vsn=3.0.0")
    assert refused.value.response.status_code == 400


async def test_the_python_client_with_a_bad_key_cannot_connect(served: Served) -> None:
    """The official client surfaces the refusal instead of hanging."""
    py = await served.python(token=FOREIGN_KEY)
    with pytest.raises(InvalidStatus):
        await py.subscribe(TOPIC)


async def test_the_x_api_key_header_wins_over_the_query_parameter(served: Served) -> None:
    """As on the real server: a good header with a bad query key connects."""
    socket = await connect(
        f"{served.ws_url}?apikey=bad&vsn=1.0.0", additional_headers={"x-api-key": served.apikey}
    )
    await socket.close()


async def test_a_join_with_a_bad_access_token_is_refused_and_the_connection_stays(served: Served) -> None:
    """The join reply is an error naming the token problem; other joins on the socket still work."""
    raw = await served.raw()
    refused = await raw.join(f"realtime:{TOPIC}", access_token=user_token(ttl=-60))
    assert refused["payload"] == {
        "status": "error",
        "response": {"reason": "InvalidJWTToken: Token has expired"},
    }
    accepted = await raw.join("realtime:preview:proj-2", access_token=user_token())
    assert accepted["payload"]["status"] == "ok"


@pytest.mark.parametrize("token", ["sb_publishable_ACJWlzQHlZjBrEguHvfOxg_3BJgxAaH", None, ""])
async def test_a_join_without_a_user_token_stands_on_the_connections_key(served: Served, token: Any) -> None:
    """No token, an empty one or an opaque API key in the join: the connect-time key's claims apply."""
    raw = await served.raw()
    reply = await raw.join(f"realtime:{TOPIC}", access_token=token)
    assert reply["payload"]["status"] == "ok"


async def test_refreshes_with_opaque_or_unchanged_tokens_are_ignored_without_a_reply(served: Served) -> None:
    """``access_token`` never gets a reply; these ones change nothing either."""
    raw = await served.raw(vsn="2.0.0")
    token = user_token()
    await raw.join(f"realtime:{TOPIC}", access_token=token)
    for ignored in ("sb_publishable_x", token, None):
        await raw.push(f"realtime:{TOPIC}", "access_token", {"access_token": ignored}, join_ref="1")
    ref = await raw.push("phoenix", "heartbeat", {})
    assert (await raw.recv())["ref"] == ref


async def test_a_bad_refresh_ends_only_that_channel(served: Served) -> None:
    """System error and phx_close on the refreshed channel; the connection's other channel goes on."""
    raw = await served.raw()
    first, second = f"realtime:{TOPIC}", "realtime:preview:proj-2"
    await raw.join(first)
    await raw.join(second, {"broadcast": {"self": True}})
    await raw.push(first, "access_token", {"access_token": "garbage"}, join_ref="1")
    system = await raw.next(lambda m: m["event"] == "system")
    assert system == {
        "topic": first, "event": "system", "ref": None,
        "payload": {"extension": "system", "status": "error", "channel": TOPIC,
                    "message": "The token provided is not a valid JWT"},
    }  # fmt: skip
    assert (await raw.recv())["event"] == "phx_close"
    await raw.push(second, "broadcast", {"type": "broadcast", "event": "alive", "payload": {}})
    assert (await raw.recv())["payload"]["event"] == "alive"


async def test_a_channel_ends_when_its_token_expires(start_hub: StartHub) -> None:
    """At ``exp`` (on the hub's clock) the Python client gets the system error, then CLOSED."""
    clock = FakeClock(datetime.now(UTC))
    served = await start_hub(clock=clock)
    py = await served.python(token=user_token(ttl=600))
    channel = await py.subscribe(TOPIC, echo_self=True)
    await clock.advance(590)
    await channel.send_broadcast("before_exp", {})
    await py.log.expect(kind("broadcast", event="before_exp"))
    await clock.advance(20)
    error = await py.log.expect(kind("status", status="CHANNEL_ERROR"))
    assert "Token has expired" in error["error"]
    await py.log.expect(kind("status", status="CLOSED"))
    assert len(py.log.matching(kind("status", status="CHANNEL_ERROR"))) == 1


async def test_revoked_claims_end_their_channels_and_only_theirs(start_hub: StartHub) -> None:
    """``revoke`` ends the channels joined with matching claims as an expiry does (system error, then
    CLOSED); a channel joined with other claims goes on."""
    served = await start_hub()
    revoked = await served.python(token=user_token("agent-of-ended-preview"))
    kept = await served.python(token=user_token("user-2"))
    await revoked.subscribe(TOPIC)
    other = await kept.subscribe(TOPIC, echo_self=True)
    assert served.hub.revoke(lambda claims: claims.get("sub") == "agent-of-ended-preview", "revoked") == 1
    error = await revoked.log.expect(kind("status", status="CHANNEL_ERROR"))
    assert "revoked" in error["error"]
    await revoked.log.expect(kind("status", status="CLOSED"))
    await other.send_broadcast("still_here", {})
    await kept.log.expect(kind("broadcast", event="still_here"))


async def test_a_refreshed_token_moves_the_expiry(start_hub: StartHub) -> None:
    """After a refresh, the old token's ``exp`` passes without ending the channel."""
    clock = FakeClock(datetime.now(UTC))
    served = await start_hub(clock=clock)
    py = await served.python(token=user_token(ttl=60))
    channel = await py.subscribe(TOPIC, echo_self=True)
    await py.client.set_auth(user_token(ttl=3600))
    # The refresh has no reply; a broadcast echoed behind it on the same socket shows it was handled.
    await channel.send_broadcast("refreshed", {})
    await py.log.expect(kind("broadcast", event="refreshed"))
    await clock.advance(120)
    await channel.send_broadcast("after_refresh", {})
    await py.log.expect(kind("broadcast", event="after_refresh"))
    assert not py.log.matching(kind("status", status="CHANNEL_ERROR"))


async def only_own_project(claims: Claims, topic: str, /) -> None:
    if topic != f"preview:{claims.get('project')}":
        raise Forbidden(f"You do not have permissions to read from this Channel topic: {topic}")


async def test_the_authorizer_refuses_a_join_with_the_supabase_reason(start_hub: StartHub) -> None:
    """A ``Forbidden`` from the authorizer is the join error the clients report as CHANNEL_ERROR."""
    served = await start_hub(authorizer=only_own_project)
    allowed = await served.python(token=anon_key(project="proj-1"))
    await allowed.subscribe(TOPIC)
    await allowed.log.expect(kind("status", status="SUBSCRIBED"))

    refused = await served.python(token=anon_key(project="proj-2"))
    await refused.subscribe(TOPIC)
    error = await refused.log.expect(kind("status", status="CHANNEL_ERROR"))
    assert (
        "Unauthorized: You do not have permissions to read from this Channel topic: preview:proj-1"
        in error["error"]
    )


async def test_the_authorizer_is_asked_again_on_refresh(start_hub: StartHub) -> None:
    """A refreshed token that may not read the topic ends the channel."""
    served = await start_hub(authorizer=only_own_project)
    raw = await served.raw()
    await raw.join(f"realtime:{TOPIC}", access_token=user_token(project="proj-1"))
    await raw.push(
        f"realtime:{TOPIC}", "access_token", {"access_token": user_token(project="proj-9")}, join_ref="1"
    )
    system = await raw.next(lambda m: m["event"] == "system")
    assert (
        system["payload"]["message"]
        == f"You no longer have permission to read from this Channel topic: {TOPIC}"
    )


async def broken_verifier(token: str, /) -> Claims:
    raise RuntimeError("the JWKS endpoint is down")


async def test_a_failing_verifier_is_a_500_with_a_json_error_not_a_crash(start_hub: StartHub) -> None:
    """A verifier that breaks (not one that refuses) is the server's fault: 500, logged, hub still up."""
    served = await start_hub(verifier=broken_verifier)
    with pytest.raises(InvalidStatus) as refused:
        await connect(f"{served.ws_url}?apikey=anything")
    assert refused.value.response.status_code == 500
    assert refused.value.response.body == b'{"error":"Error connecting to Realtime"}'
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{served.http_url}/api/broadcast", json={}, headers={"apikey": "anything"}
        )
    assert (response.status_code, response.json()["error"]) == (500, "Error connecting to Realtime")
