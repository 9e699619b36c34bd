"""The Fly commands end to end: ``fly-emulator`` runs as a real server, the others talk to it over HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from typer.testing import CliRunner

from velocity.cli.fly_commands import fly_app, parse_age, stuck_reason
from velocity.fly.types import MachineJSON

TOKEN = "cli-token"
IMAGE = "ghcr.io/velocity/preview-container:1.0.0"
APPS = ("cli-doctor", "cli-smoke", "cli-faults", "cli-machines")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def emulator_url() -> Iterator[str]:
    """``velocity fly-emulator`` in its own process, with simulated machines that boot in 50 ms.

    Rate limits are off: each command is a new client, and the tests run them faster than people do.
    """
    port = free_port()
    apps = [arg for app in APPS for arg in ("--app", app)]
    command = [
        sys.executable, "-c", "from velocity.cli.fly_commands import fly_app; fly_app()",
        "fly-emulator", "--port", str(port), "--token", TOKEN, "--boot-seconds", "0.05", "--no-rate-limits", *apps,
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/_emulator/stats", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if process.poll() is not None or time.monotonic() > deadline:
                    errors = process.stderr.read() if process.stderr else b""
                    raise RuntimeError(f"the emulator did not start: {errors!r}") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stderr:
            process.stderr.close()


def invoke(url: str, app: str, *args: str, token: str = TOKEN, columns: int = 200) -> tuple[int, str]:
    env = {
        "FLY_API_BASE_URL": url,
        "FLY_API_TOKEN": token,
        "FLY_APP_NAME": app,
        "FLY_REGIONS": "ord",
        "PREVIEW_CONTAINER_IMAGE": IMAGE,
        "PREVIEW_PROVIDER": "local",
        "COLUMNS": str(columns),
    }
    result = CliRunner().invoke(fly_app, list(args), env=env)
    return result.exit_code, result.output


def test_doctor_passes_against_the_emulator(emulator_url: str) -> None:
    """Settings, token, app and machine access all check out."""
    code, output = invoke(emulator_url, "cli-doctor", "doctor")
    assert code == 0, output
    assert "all good" in output


def test_doctor_fails_on_a_bad_token_and_says_how_to_fix_it(emulator_url: str) -> None:
    """Exit 1, with the command that makes a token."""
    code, output = invoke(emulator_url, "cli-doctor", "doctor", token="wrong")
    assert code == 1
    assert "fly tokens create deploy" in output


def test_doctor_fails_on_a_missing_app(emulator_url: str) -> None:
    """Exit 1, with the command that creates the app."""
    code, output = invoke(emulator_url, "no-such-app", "doctor")
    assert code == 1
    assert "fly apps create no-such-app" in output


def test_smoke_test_passes_and_reports_each_step_with_timings(emulator_url: str) -> None:
    """Every step ok with its seconds; exit 0; no machine left behind."""
    code, output = invoke(emulator_url, "cli-smoke", "smoke-test", "--timeout", "20")
    assert code == 0, output
    for step in (
        "create machine",
        "wait until started",
        "/health answers",
        "destroy machine",
        "machine is gone",
    ):
        assert step in output
    assert "passed in" in output
    assert invoke(emulator_url, "cli-smoke", "machines", "count")[1].startswith("0")


def test_smoke_test_fails_clearly_when_machines_do_not_boot(emulator_url: str) -> None:
    """An image that fails to boot: the wait step fails, the machine is destroyed, exit 1."""
    headers = {"authorization": f"Bearer {TOKEN}"}
    faults = {"failing_images": [IMAGE], "enforce_rate_limits": False}
    httpx.put(f"{emulator_url}/_emulator/faults", json=faults, headers=headers).raise_for_status()
    try:
        code, output = invoke(emulator_url, "cli-faults", "smoke-test", "--timeout", "20")
    finally:
        calm = {"enforce_rate_limits": False}
        httpx.put(f"{emulator_url}/_emulator/faults", json=calm, headers=headers).raise_for_status()
    assert code == 1
    assert "FAIL wait until started" in output
    assert "FAILED" in output


def test_smoke_test_fails_on_a_bad_token(emulator_url: str) -> None:
    """Nothing is created; exit 1 with the token hint."""
    code, output = invoke(emulator_url, "cli-smoke", "smoke-test", token="wrong")
    assert code == 1
    assert "FLY_API_TOKEN" in output


def test_machines_are_listed_counted_and_the_stuck_ones_destroyed(emulator_url: str) -> None:
    """``ls`` shows ours with preview and user, ``count`` totals them, ``stuck --destroy`` removes them;
    ids are printed whole even in a narrow terminal, to be copied."""
    headers = {"authorization": f"Bearer {TOKEN}"}
    metadata = {
        "velocity_owner": "velocity-previews",
        "velocity_preview_id": "pv-cli-0123456789",
        "user_id": "u-cli",
    }
    ids = []
    for config in ({"image": IMAGE, "metadata": metadata}, {"image": IMAGE}):
        response = httpx.post(
            f"{emulator_url}/v1/apps/cli-machines/machines", json={"config": config}, headers=headers
        )
        response.raise_for_status()
        ids.append(response.json()["id"])
    code, output = invoke(emulator_url, "cli-machines", "machines", "ls", columns=50)
    assert code == 0
    assert ids[0] in output and "pv-cli-0123456789" in output and "u-cli" in output, output
    assert invoke(emulator_url, "cli-machines", "machines", "count")[1].startswith("1 ")
    assert invoke(emulator_url, "cli-machines", "machines", "count", "--all")[1].startswith("2 ")
    assert (
        "0 machine(s)" in invoke(emulator_url, "cli-machines", "machines", "stuck", "--older-than", "1h")[1]
    )
    code, output = invoke(
        emulator_url, "cli-machines", "machines", "stuck", "--older-than", "0s", "--destroy", columns=50
    )
    assert code == 0
    assert ids[0] in output and "pv-cli-0123456789" in output, output
    assert "1 machine(s) older than 0s or wedged for 5m; 1 destroyed" in " ".join(output.split())
    deadline = time.monotonic() + 10
    while not invoke(emulator_url, "cli-machines", "machines", "count")[1].startswith("0"):
        assert time.monotonic() < deadline
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("text", "seconds"), [("1h", 3600), ("90m", 5400), ("1h30m", 5400), ("2d", 172800), ("0s", 0)]
)
def test_ages_are_read_in_days_hours_minutes_and_seconds(text: str, seconds: int) -> None:
    """``--older-than`` takes the spellings operators type."""
    assert parse_age(text).total_seconds() == seconds


def test_a_nonsense_age_is_refused() -> None:
    """Not a duration: a usage error, not a crash."""
    code, _ = invoke("http://127.0.0.1:9", "x", "machines", "stuck", "--older-than", "soon")
    assert code == 2


def test_the_commands_are_listed_for_the_main_cli_to_mount() -> None:
    """``app.add_typer(fly_app)`` brings these commands to the top level."""
    names = {command.name for command in fly_app.registered_commands}
    assert names == {"fly-emulator", "smoke-test", "doctor"}
    assert [group.name for group in fly_app.registered_groups] == ["machines"]


def test_environment_is_left_as_it_was() -> None:
    """The runner's variables do not leak into the test process."""
    assert os.environ.get("FLY_API_TOKEN") != TOKEN


NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("state", "created", "updated", "reason"),
    [
        ("started", "2026-01-01T11:30:00Z", "2026-01-01T11:30:00Z", None),
        ("started", "2026-01-01T10:30:00Z", "2026-01-01T10:30:00Z", "age 1h30m"),
        ("starting", "2026-01-01T11:50:00Z", "2026-01-01T11:50:00Z", "starting for 10m00s"),
        ("stopping", "2026-01-01T11:50:00Z", "2026-01-01T11:58:00Z", None),
        ("replacing", "2026-01-01T11:40:00Z", "2026-01-01T11:52:00Z", None),
        ("replacing", "2026-01-01T11:40:00Z", "2026-01-01T11:45:00Z", "replacing for 15m00s"),
        ("destroyed", "2026-01-01T01:00:00Z", "2026-01-01T01:00:00Z", None),
    ],
)
def test_a_machine_is_stuck_when_too_old_or_wedged_in_a_transient_state(
    state: str, created: str, updated: str, reason: str | None
) -> None:
    """Past the age limit whatever its state; wedged after 5 minutes in a transient state (10 updating)."""
    machine: MachineJSON = {"id": "m", "state": state, "created_at": created, "updated_at": updated}
    found = stuck_reason(machine, NOW, older_than=timedelta(hours=1), wedged_after=timedelta(minutes=5))
    assert found == reason
