"""The doctor: settings checked offline, then token, app and machine access on the emulator."""

from __future__ import annotations

import pytest

from tests.fly.support import InstantClock, emulator_client, make_settings
from velocity.emulator import FlyEmulator
from velocity.fly.doctor import Check, check_fly, check_settings
from velocity.settings import ProviderKind


def failed(checks: list[Check]) -> dict[str, str]:
    return {c.name: c.fix or "" for c in checks if c.failed}


def test_good_settings_pass_with_only_a_floating_tag_warning() -> None:
    """The defaults are consistent; ``:latest`` is a warning, not a failure."""
    checks = check_settings(make_settings())
    assert failed(checks) == {}
    assert [c.name for c in checks if c.warning] == ["image tag"]


@pytest.mark.parametrize(
    ("values", "name", "fix"),
    [
        ({"fly_api_token": None}, "FLY_API_TOKEN", "fly tokens create deploy"),
        ({"fly_app_name": "Bad_Name"}, "FLY_APP_NAME", "lowercase"),
        ({"fly_regions": ["chicago"]}, "FLY_REGIONS", "region codes"),
        ({"preview_container_image": "Not An Image"}, "PREVIEW_CONTAINER_IMAGE", "registry/repository:tag"),
        ({"container_cpu_count": 3}, "machine size", "1, 2, 4, 8 or 16"),
        ({"preview_provider": ProviderKind.FLY}, "VELOCITY_PUBLIC_URL", "public https URL"),
    ],
)
def test_each_bad_setting_fails_with_how_to_fix_it(values: dict[str, object], name: str, fix: str) -> None:
    """The failure names the variable and the fix."""
    problems = failed(check_settings(make_settings(**values)))
    assert name in problems
    assert fix in problems[name]


def test_an_odd_memory_size_is_a_warning() -> None:
    """Memory outside Fly's sizes for the CPU kind warns with the allowed range."""
    checks = check_settings(make_settings(container_memory_mb=300))
    [size] = [c for c in checks if c.name == "machine size"]
    assert size.warning and "256" in (size.fix or "")


async def test_the_emulator_passes_every_remote_check(emulator: FlyEmulator, clock: InstantClock) -> None:
    """Token valid, app present, machines listable."""
    client = emulator_client(emulator, clock)
    checks = await check_fly(make_settings(), client)
    await client.aclose()
    assert [(c.name, c.ok) for c in checks] == [("token", True), ("app", True), ("machines", True)]


async def test_a_bad_token_fails_clearly_and_stops_there(emulator: FlyEmulator, clock: InstantClock) -> None:
    """A 401 says how to make a token; nothing else is tried."""
    client = emulator_client(emulator, clock, token="wrong")
    checks = await check_fly(make_settings(), client)
    await client.aclose()
    assert [(c.name, c.ok) for c in checks] == [("token", False)]
    assert "fly tokens create deploy" in (checks[0].fix or "")


async def test_a_missing_app_fails_with_the_command_that_creates_it(
    emulator: FlyEmulator, clock: InstantClock
) -> None:
    """The app does not exist: ``fly apps create``."""
    emulator.apps.clear()
    client = emulator_client(emulator, clock)
    checks = await check_fly(make_settings(), client)
    await client.aclose()
    assert failed(checks) == {"app": f"create it: `fly apps create {make_settings().fly_app_name}` "
                              "(or set FLY_APP_NAME to the app the machines live in)"}  # fmt: skip


async def test_an_unreachable_api_fails_the_token_check(emulator: FlyEmulator, clock: InstantClock) -> None:
    """5xx all the way: the doctor says which URL it could not use."""
    from velocity.emulator import Faults

    emulator.faults = Faults(server_errors_next=100)
    client = emulator_client(emulator, clock)
    checks = await check_fly(make_settings(), client)
    await client.aclose()
    assert [c.name for c in checks if c.failed] == ["token"]
