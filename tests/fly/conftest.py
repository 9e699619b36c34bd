"""The Fly suites' world: an emulator enforcing Fly's limits, a client sharing its clock, no real waits."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
import stamina

from tests.fly.support import APP, TOKEN, InstantClock, emulator_client
from velocity.emulator import FlyEmulator
from velocity.fly import FlyClient, RateLimiter, RetryPolicy

Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture(autouse=True)
def no_backoff() -> Iterator[None]:
    """stamina's test mode: retries happen at once, at most three attempts."""
    with stamina.set_testing(True, attempts=3, cap=True):
        yield


@pytest.fixture
def clock() -> InstantClock:
    return InstantClock()


@pytest.fixture
async def emulator(clock: InstantClock) -> AsyncIterator[FlyEmulator]:
    emulator = FlyEmulator(tokens=[TOKEN], clock=clock)
    yield emulator
    await emulator.aclose()


@pytest.fixture
async def client(emulator: FlyEmulator, clock: InstantClock) -> AsyncIterator[FlyClient]:
    """A client of the emulator, every exchange checked against the spec."""
    client = emulator_client(emulator, clock)
    yield client
    await client.aclose()


@pytest.fixture
async def mock_client(clock: InstantClock) -> AsyncIterator[Callable[[Handler], FlyClient]]:
    """A client answered by ``handler``, for the answers the emulator never gives."""
    made: list[FlyClient] = []

    def make(handler: Handler) -> FlyClient:
        http = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="https://api.machines.dev")
        client = FlyClient(
            http,
            app=APP,
            token=TOKEN,
            clock=clock,
            limiter=RateLimiter(clock),
            policy=RetryPolicy(lookup_delay=0.0),
        )
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()
