"""The ``velocity`` command as people meet it: one entry point for the orchestrator and the Fly tools."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from velocity.cli.main import app

COMMANDS = (
    "up",
    "serve",
    "token",
    "projects",
    "previews",
    "smoke-test",
    "doctor",
    "machines",
    "fly-emulator",
)


def test_help_lists_the_orchestrator_and_the_fly_commands() -> None:
    """``velocity --help`` names every top-level command, the mounted Fly ones included."""
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    listed = {name for name in COMMANDS if re.search(rf"^\W?\s+{re.escape(name)}\s", result.output, re.M)}
    assert listed == set(COMMANDS), result.output


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["fly-emulator", "--help"], "--backend"),
        (["smoke-test", "--help"], "--timeout"),
        (["doctor", "--help"], "how to fix"),
        (["machines", "stuck", "--help"], "--older-than"),
    ],
)
def test_the_fly_commands_answer_under_the_main_command(argv: list[str], says: str) -> None:
    """Each Fly command is reachable as ``velocity <command>`` with its own options."""
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    assert says in result.output


@pytest.mark.parametrize("command", ["up", "serve"])
def test_up_and_serve_take_the_same_listening_options(command: str) -> None:
    """Where to listen and where to keep state are options of both commands, with -v for more logs."""
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for option in ("--host", "--port", "--data-dir", "--verbose"):
        assert option in result.output, (option, result.output)


def test_up_follows_edits_unless_told_not_to() -> None:
    result = CliRunner().invoke(app, ["up", "--help"], env={"COLUMNS": "200"})
    assert "--no-watch" in result.output
