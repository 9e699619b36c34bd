"""An emulator per test, on a clock that never waits, and an httpx client checked against the spec."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import stamina

from tests.fly.support import APP, TOKEN, InstantClock, emulator_http
from velocity.emulator import Faults, FlyEmulator


@pytest.fixture(autouse=True)
def no_backoff() -> Iterator[None]:
    """Retries happen at once."""
    with stamina.set_testing(True, attempts=3, cap=True):
        yield


@pytest.fixture
def clock() -> InstantClock:
    return InstantClock()


@pytest.fixture
async def emulator(clock: InstantClock) -> AsyncIterator[FlyEmulator]:
    """Fly's rate limits are off here (raw calls have no limiter); ``test_faults`` turns them on."""
    emulator = FlyEmulator(tokens=[TOKEN], clock=clock, faults=Faults(enforce_rate_limits=False))
    yield emulator
    await emulator.aclose()


@pytest.fixture
async def http(emulator: FlyEmulator) -> AsyncIterator[httpx.AsyncClient]:
    """Raw calls, spec-checked both ways, authenticated with the test token."""
    async with emulator_http(emulator) as client:
        client.headers["authorization"] = f"Bearer {TOKEN}"
        yield client


@pytest.fixture
def machines() -> str:
    return f"/v1/apps/{APP}/machines"


@pytest.fixture
async def lenient_http(emulator: FlyEmulator) -> AsyncIterator[httpx.AsyncClient]:
    """For requests real clients send that the spec's schemas forbid: only the answers are checked."""
    async with emulator_http(emulator, check_requests=False) as client:
        client.headers["authorization"] = f"Bearer {TOKEN}"
        yield client
