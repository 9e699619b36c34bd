"""Fly's answers become the project's error tree in one place, and nothing of httpx leaks out."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest

from velocity.domain import (
    BadRequest,
    CapacityError,
    Conflict,
    Forbidden,
    NotFound,
    PreviewError,
    ProviderConflict,
    ProviderDenied,
    ProviderError,
    ProviderNotFound,
    ProviderRejected,
    RateLimited,
    Unauthorized,
    Unavailable,
)
from velocity.fly import FlyClient, MaybeApplied
from velocity.fly.errors import MAX_BODY_CHARS, error_from_response, retry_after_seconds

Handler = Callable[[httpx.Request], httpx.Response]


def answer(status: int, body: object = None, **headers: str) -> httpx.Response:
    request = httpx.Request("GET", "https://api.machines.dev/v1/apps/a/machines/m")
    if isinstance(body, str):
        return httpx.Response(status, text=body, headers=headers, request=request)
    return httpx.Response(status, json=body, headers=headers, request=request)


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, {"error": "invalid config"}, ProviderRejected),
        (401, {"error": "You must be authenticated"}, ProviderDenied),
        (403, {"error": "not allowed"}, ProviderDenied),
        (404, {"error": "machine not found"}, ProviderNotFound),
        (408, {"error": "deadline_exceeded"}, MaybeApplied),
        (409, {"error": "lease currently held by someone"}, ProviderConflict),
        (
            409,
            {"error": "could not reserve resource: insufficient memory available to fulfill request"},
            CapacityError,
        ),
        (412, {"error": "failed_precondition"}, ProviderConflict),
        (422, {"error": "Name has already been taken", "status": "name_taken"}, ProviderConflict),
        (422, {"error": "no room", "status": "insufficient_capacity"}, CapacityError),
        (503, {"error": "out of capacity", "status": "insufficient_capacity"}, CapacityError),
        (422, {"error": "bad"}, ProviderRejected),
        (429, {"error": "rate limit exceeded"}, RateLimited),
        (500, "<html>oops</html>", MaybeApplied),
        (502, None, MaybeApplied),
        (503, {"error": "unavailable"}, MaybeApplied),
        (418, {"error": "teapot"}, ProviderRejected),
    ],
)
def test_each_status_and_fly_error_body_maps_to_its_error_class(
    status: int, body: object, expected: type
) -> None:
    """Status codes and Fly's ``status`` field pick the class; the class says whether to retry."""
    error = error_from_response(answer(status, body), action="get")
    assert type(error) is expected
    assert isinstance(error, PreviewError)
    assert f"answered {status}" in error.message
    transient = isinstance(error, Unavailable | RateLimited)
    assert (error.retry_after is not None) == transient
    # Fly's answer is the provider's problem: never the caller's 400, 401, 403, 404, 409 or 422.
    assert isinstance(error, ProviderError)
    assert error.status_code in (502, 503)
    assert not isinstance(error, BadRequest | Unauthorized | Forbidden)


def test_a_machine_fly_no_longer_has_is_still_a_not_found_to_the_code_that_asks() -> None:
    """Code that treats a gone machine as an answer catches ``NotFound`` and ``Conflict`` as before."""
    assert isinstance(error_from_response(answer(404, {"error": "not found"}), action="get"), NotFound)
    held = error_from_response(answer(409, {"error": "lease currently held"}), action="lease")
    assert isinstance(held, Conflict)


def test_errors_keep_the_fly_request_id_and_truncate_bodies() -> None:
    """``fly-request-id`` is kept for support tickets; a huge body is cut to a readable length."""
    error = error_from_response(answer(500, "x" * 10_000, **{"fly-request-id": "01ABC-ord"}), action="create")
    assert error.request_id == "01ABC-ord"
    assert "01ABC-ord" in error.message
    assert len(error.message) < MAX_BODY_CHARS + 100


def test_fly_message_field_is_preferred_over_error_as_flygo_does() -> None:
    """``{"error": ..., "message": ...}`` reads the message."""
    error = error_from_response(answer(400, {"error": "generic", "message": "specific"}), action="update")
    assert "specific" in error.message


def test_an_unauthorized_error_says_how_to_fix_the_token() -> None:
    """The message names FLY_API_TOKEN and where to read more."""
    assert "FLY_API_TOKEN" in error_from_response(answer(401, {"error": "no"}), action="get").message


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("3", 3.0), ("0.5", 0.5), ("1000", 60.0), ("soon", None), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)],
)
def test_retry_after_is_read_in_seconds_or_as_a_date_and_capped(header: str, seconds: float | None) -> None:
    """Delta-seconds or an HTTP date; absurd waits are capped at a minute, a date in the past is now."""
    assert retry_after_seconds(answer(429, None, **{"retry-after": header})) == seconds


def test_a_429_carries_the_retry_after_delay() -> None:
    """``RateLimited.retry_after`` is the server's ``Retry-After``, 1 s when it says nothing."""
    assert error_from_response(answer(429, None, **{"retry-after": "4"}), action="get").retry_after == 4.0
    assert error_from_response(answer(429, None), action="get").retry_after == 1.0


CALLS: dict[str, Callable[[FlyClient], Awaitable[object]]] = {
    "get_app": lambda c: c.get_app(),
    "current_token": lambda c: c.current_token(),
    "list_machines": lambda c: c.list_machines(metadata={"a": "b"}),
    "get_machine": lambda c: c.get_machine("m1"),
    "create_machine": lambda c: c.create_machine({"config": {"image": "i"}}),
    "update_machine": lambda c: c.update_machine("m1", {"config": {"image": "i"}}),
    "start_machine": lambda c: c.start_machine("m1"),
    "stop_machine": lambda c: c.stop_machine("m1", signal="SIGTERM", kill_timeout=3),
    "suspend_machine": lambda c: c.suspend_machine("m1"),
    "destroy_machine": lambda c: c.destroy_machine("m1", force=True),
    "wait_machine": lambda c: c.wait_machine("m1", timeout=5),
    "acquire_lease": lambda c: c.acquire_lease("m1", ttl=30),
    "release_lease": lambda c: c.release_lease("m1", "n"),
    "get_metadata": lambda c: c.get_metadata("m1"),
    "set_metadata": lambda c: c.set_metadata("m1", "k", "v"),
    "delete_metadata": lambda c: c.delete_metadata("m1", "k"),
}

BODYLESS = {
    "start_machine", "stop_machine", "suspend_machine", "destroy_machine", "release_lease", "set_metadata",
    "delete_metadata",
}  # fmt: skip

FAILURES: dict[str, Handler] = {
    "connect": lambda r: (_ for _ in ()).throw(httpx.ConnectError("refused", request=r)),
    "read timeout": lambda r: (_ for _ in ()).throw(httpx.ReadTimeout("slow", request=r)),
    "broken answer": lambda r: (_ for _ in ()).throw(httpx.RemoteProtocolError("eof", request=r)),
    "bad encoding": lambda r: (_ for _ in ()).throw(httpx.DecodingError("gzip", request=r)),
    "not json": lambda r: httpx.Response(200, text="<html>hello</html>"),
    "wrong json": lambda r: httpx.Response(200, json="a string"),
    "server error": lambda r: httpx.Response(500, text="boom"),
}


@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize("failure", sorted(FAILURES))
async def test_httpx_errors_never_leak_out_of_the_client(
    mock_client: Callable[[Handler], FlyClient], call: str, failure: str
) -> None:
    """Whatever the network or Fly does, callers see a ``PreviewError``, chained to the cause."""
    client = mock_client(FAILURES[failure])
    if failure in ("not json", "wrong json") and call in BODYLESS:
        await CALLS[call](client)  # these read no body, so any 200 will do
        return
    with pytest.raises(PreviewError) as caught:
        await CALLS[call](client)
    cause = caught.value.__cause__
    assert cause is None or isinstance(cause, httpx.HTTPError | ValueError)
