"""The client-side limiter: Fly's documented rates per action and machine, on an injected clock."""

from __future__ import annotations

import asyncio

import pytest

from tests.fly.support import APP, TOKEN, InstantClock, emulator_http
from velocity.emulator import Faults, FlyEmulator
from velocity.fly import FlyClient, Rate, RateLimiter
from velocity.fly.client import CLIENT_MARGIN

IMAGE = "ghcr.io/velocity/preview-container:1.0.0"


def test_an_action_allows_a_burst_of_three_then_one_a_second(clock: InstantClock) -> None:
    """Three calls go at once; each further one waits a second more than the one before."""
    limiter = RateLimiter(clock)
    assert [limiter.reserve("start", "m1") for _ in range(5)] == [0.0, 0.0, 0.0, 1.0, 2.0]


def test_getting_a_machine_allows_ten_then_five_a_second(clock: InstantClock) -> None:
    """Get Machine: burst 10, then 0.2 s apart."""
    limiter = RateLimiter(clock)
    delays = [limiter.reserve("get", "m1") for _ in range(12)]
    assert delays[:10] == [0.0] * 10
    assert delays[10:] == pytest.approx([0.2, 0.4])


def test_buckets_are_per_action_and_per_machine(clock: InstantClock) -> None:
    """Starting one machine does not slow stopping it, nor starting another."""
    limiter = RateLimiter(clock)
    for _ in range(3):
        limiter.reserve("start", "m1")
    assert limiter.reserve("start", "m1") > 0
    assert limiter.reserve("stop", "m1") == 0
    assert limiter.reserve("start", "m2") == 0


def test_tokens_come_back_with_time(clock: InstantClock) -> None:
    """After a quiet second a token is there again; ``try_take`` says how long until the next one."""
    limiter = RateLimiter(clock)
    for _ in range(3):
        assert limiter.try_take("create", "app") is None
    assert limiter.try_take("create", "app") == pytest.approx(1.0)
    clock.advance(1.0)
    assert limiter.try_take("create", "app") is None


def test_rates_scale_and_can_be_replaced(clock: InstantClock) -> None:
    """``scale`` speeds every rate up (benchmarks); ``rates`` sets them per action."""
    limiter = RateLimiter(clock, rates={"wait": Rate(2.0, 1)}, scale=10.0)
    limiter.reserve("wait", "m")
    assert limiter.reserve("wait", "m") == pytest.approx(1 / 20)


async def test_acquire_sleeps_on_the_injected_clock(clock: InstantClock) -> None:
    """The wait happens through the clock, so tests never sleep for real."""
    limiter = RateLimiter(clock)
    waited = [await limiter.acquire("destroy", "m") for _ in range(4)]
    assert waited == [0.0, 0.0, 0.0, 1.0]
    assert clock.slept == [1.0]


async def test_a_burst_of_creates_meets_no_429_from_an_emulator_enforcing_fly_limits() -> None:
    """Twenty creates at once queue in the client; the emulator, enforcing Fly's rates, never says 429."""
    # Real time, every rate 50 times Fly's: the queue drains in a fraction of a second, and concurrent
    # sleepers wake in the order time gives them, which a clock that jumps on each sleep would not.
    emulator = FlyEmulator(tokens=[TOKEN], faults=Faults(rate_limit_scale=50.0))
    client = FlyClient(
        emulator_http(emulator), app=APP, token=TOKEN, limiter=RateLimiter(scale=50.0 * CLIENT_MARGIN)
    )
    try:
        created = await asyncio.gather(
            *(client.create_machine({"config": {"image": IMAGE}}) for _ in range(20))
        )
    finally:
        await client.aclose()
        await emulator.aclose()
    assert len({m["id"] for m in created}) == 20
    assert emulator.stats.calls["create"] == 20
    assert emulator.stats.statuses[429] == 0
