"""Retries: transient failures of idempotent calls are retried, creates are never sent twice blindly."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from tests.fly.support import InstantClock
from velocity.domain import BadRequest, NotFound, ProviderRejected, RateLimited, Unavailable
from velocity.emulator import Faults, FlyEmulator
from velocity.fly import FlyClient, MaybeApplied
from velocity.fly.client import retry_delay
from velocity.metrics import REGISTRY
from velocity.providers.base import META_CREATE_TAG

Handler = Callable[[httpx.Request], httpx.Response]
MACHINE = {"id": "0123456789abcd", "state": "created", "created_at": "2026-01-01T00:00:00Z"}


class Script:
    """Answers in order, then the last one forever; remembers every request."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def count(self, method: str) -> int:
        return sum(1 for r in self.requests if r.method == method)


def test_the_backoff_hook_waits_what_retry_after_says() -> None:
    """A 429 waits its ``Retry-After``; a 5xx without one backs off exponentially; 4xx never retries."""
    assert retry_delay(RateLimited("slow down", delay=7.0)) == 7.0
    assert retry_delay(Unavailable("down", delay=2.0)) == 2.0
    assert retry_delay(MaybeApplied("down", delay=0.0)) is True
    assert retry_delay(NotFound("gone")) is False
    assert retry_delay(BadRequest("bad")) is False


async def test_a_get_is_retried_through_429_and_503(mock_client: Callable[[Handler], FlyClient]) -> None:
    """Idempotent calls retry transient answers until one succeeds."""
    script = Script(
        httpx.Response(429, headers={"retry-after": "2"}, json={"error": "rate limit exceeded"}),
        httpx.Response(503, json={"error": "unavailable"}),
        httpx.Response(200, json=MACHINE),
    )
    machine = await mock_client(script).get_machine("0123456789abcd")
    assert machine["id"] == MACHINE["id"]
    assert script.count("GET") == 3


async def test_each_call_retry_and_wait_is_counted_for_operators(
    mock_client: Callable[[Handler], FlyClient],
) -> None:
    """The metrics see every answer by status, each retry, and the 2 s Fly's 429 asked to wait."""

    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = {
        "429": value("velocity_fly_api_calls_total", action="get", status="429"),
        "200": value("velocity_fly_api_calls_total", action="get", status="200"),
        "retries": value("velocity_fly_api_retries_total", action="get"),
        "waited": value("velocity_fly_api_rate_limit_wait_seconds_total", action="get"),
    }
    script = Script(
        httpx.Response(429, headers={"retry-after": "2"}, json={"error": "rate limit exceeded"}),
        httpx.Response(200, json=MACHINE),
    )
    await mock_client(script).get_machine("0123456789abcd")
    assert value("velocity_fly_api_calls_total", action="get", status="429") == before["429"] + 1
    assert value("velocity_fly_api_calls_total", action="get", status="200") == before["200"] + 1
    assert value("velocity_fly_api_retries_total", action="get") == before["retries"] + 1
    assert value("velocity_fly_api_rate_limit_wait_seconds_total", action="get") >= before["waited"] + 2


async def test_a_permanent_error_is_not_retried(mock_client: Callable[[Handler], FlyClient]) -> None:
    """A 400 fails at once."""
    script = Script(httpx.Response(400, json={"error": "invalid"}))
    with pytest.raises(ProviderRejected):
        await mock_client(script).stop_machine("m")
    assert len(script.requests) == 1


async def test_retries_give_up_with_the_last_transient_error(
    mock_client: Callable[[Handler], FlyClient],
) -> None:
    """Past the attempts, the caller gets the transient error, still marked retryable."""
    script = Script(httpx.Response(503, json={"error": "unavailable"}))
    with pytest.raises(Unavailable) as caught:
        await mock_client(script).get_machine("m")
    assert caught.value.retry_after is not None
    assert len(script.requests) == 3


async def test_a_create_rejected_before_it_was_sent_is_sent_again(
    mock_client: Callable[[Handler], FlyClient],
) -> None:
    """Connection refused and 429 mean Fly did nothing: resending is safe."""
    script = Script(
        httpx.ConnectError("refused"),
        httpx.Response(429, json={"error": "rate limit exceeded"}),
        httpx.Response(200, json=MACHINE),
    )
    await mock_client(script).create_machine({"config": {"image": "i"}})
    assert script.count("POST") == 3
    assert script.count("GET") == 0


async def test_a_create_whose_answer_is_lost_is_found_by_its_tag_not_made_twice(
    mock_client: Callable[[Handler], FlyClient],
) -> None:
    """After a 504, the client lists by its create tag and returns what Fly made."""
    tags: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            tags.append(json.loads(request.content)["config"]["metadata"][META_CREATE_TAG])
            return httpx.Response(504, text="upstream request timeout")
        assert request.url.params[f"metadata.{META_CREATE_TAG}"] == tags[0]
        return httpx.Response(200, json=[{**MACHINE, "config": {"metadata": {META_CREATE_TAG: tags[0]}}}])

    machine = await mock_client(handler).create_machine({"config": {"image": "i"}})
    assert machine["id"] == MACHINE["id"]
    assert len(tags) == 1


async def test_a_lost_create_that_made_nothing_is_sent_again_with_the_same_tag(
    mock_client: Callable[[Handler], FlyClient], clock: InstantClock
) -> None:
    """Nothing listed under the tag: create again, once, with the same tag; the wait is on the clock."""
    script = Script(
        httpx.ReadTimeout("no answer"),
        httpx.Response(200, json=[]),
        httpx.Response(200, json=[]),
        httpx.Response(200, json=MACHINE),
    )
    await mock_client(script).create_machine({"config": {"image": "i", "metadata": {META_CREATE_TAG: "t-1"}}})
    posts = [r for r in script.requests if r.method == "POST"]
    assert len(posts) == 2
    assert {json.loads(p.content)["config"]["metadata"][META_CREATE_TAG] for p in posts} == {"t-1"}
    assert clock.slept


async def test_lost_creates_against_the_emulator_leave_exactly_one_machine(
    emulator: FlyEmulator, client: FlyClient
) -> None:
    """End to end: the emulator commits the create, loses the answer; one machine, the one returned."""
    emulator.faults = Faults(lost_creates_next=1)
    machine = await client.create_machine({"config": {"image": "ghcr.io/velocity/preview-container:1.0.0"}})
    listed = await client.list_machines()
    assert [m["id"] for m in listed] == [machine["id"]]
    assert emulator.stats.calls["create"] == 1


async def test_throttled_calls_succeed_after_waiting_retry_after(
    emulator: FlyEmulator, client: FlyClient
) -> None:
    """The emulator's 429s (with Retry-After) are absorbed by the client's retries."""
    emulator.faults = Faults(throttle_next=2, retry_after=1)
    assert await client.list_machines() == []
    assert emulator.stats.statuses[429] == 2
