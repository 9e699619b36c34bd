"""What the Fly, emulator and provider suites share: a clock that never waits, and wired-up clients."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from velocity.emulator import FlyEmulator
from velocity.emulator.spec_check import SpecCheckingTransport
from velocity.fly import FlyClient, RateLimiter, RetryPolicy
from velocity.settings import Settings

APP = "velocity-preview-containers"
TOKEN = "test-token"


class _IsolatedSettings(Settings):
    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)  # not the environment, not .env


def make_settings(**values: Any) -> Settings:
    """Settings from these values and the defaults, whatever the environment or a .env file say."""
    return _IsolatedSettings(**{"fly_api_token": TOKEN, "fly_app_name": APP, **values})


class InstantClock:
    """Time that moves only when someone sleeps, and then at once: waits cost nothing and are recorded."""

    def __init__(self) -> None:
        self._now = datetime(2026, 1, 1, tzinfo=UTC)
        self.slept: list[float] = []

    def now(self) -> datetime:
        return self._now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self._now += timedelta(seconds=seconds)
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)


def emulator_http(emulator: FlyEmulator, *, check_requests: bool = True) -> httpx.AsyncClient:
    """An httpx client whose every exchange with the emulator is checked against Fly's spec."""
    transport = SpecCheckingTransport(httpx.ASGITransport(app=emulator), check_requests=check_requests)
    return httpx.AsyncClient(transport=transport, base_url="http://fly.test")


def emulator_client(
    emulator: FlyEmulator, clock: InstantClock | None = None, *, token: str = TOKEN
) -> FlyClient:
    """A Fly client of the emulator; with ``clock``, the client's limiter and the emulator share time."""
    limiter = RateLimiter(clock) if clock is not None else None
    policy = RetryPolicy(lookup_delay=0.0)
    return FlyClient(
        emulator_http(emulator), app=APP, token=token, clock=clock, limiter=limiter, policy=policy
    )
