"""The console the agent echoes its lines to: the machine's log file, which must stay small."""

from __future__ import annotations

import io
from pathlib import Path

from velocity.agent.logs import LogBuffer


def test_a_console_file_starts_over_past_its_limit_and_keeps_the_newest_lines(tmp_path: Path) -> None:
    console = tmp_path / "console.log"
    with console.open("a") as echo:
        logs = LogBuffer(echo=echo, console_limit=10_000)
        for n in range(1_000):
            logs.add("stdout", f"line {n:04d} " + "x" * 40)
    text = console.read_text()
    assert len(text) <= 10_000
    assert text.startswith("agent: the console passed 10000 bytes and started over\n")
    assert text.endswith("line 0999 " + "x" * 40 + "\n")
    assert [line.line[:9] for line in logs.tail(1)] == ["line 0999"], "the buffer itself keeps everything"


def test_a_console_that_is_no_file_is_never_truncated() -> None:
    echo = io.StringIO()
    logs = LogBuffer(echo=echo, console_limit=1_000)
    for n in range(100):
        logs.add("stdout", f"line {n}")
    assert echo.getvalue().count("\n") == 100, "a pipe or a terminal keeps what was written"
