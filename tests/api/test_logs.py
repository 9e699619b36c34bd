"""The orchestrator's log lines: JSON with the request, preview, user and machine each concerns, or
readable text in a terminal; no secret in either."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.conftest import in_process
from tests.api.test_previews_api import import_project
from velocity import logs
from velocity.settings import Settings


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    out = io.StringIO()
    logs.configure(level=logging.INFO, json_lines=True, stream=out)
    try:
        yield out
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


async def test_a_preview_s_lines_carry_its_request_preview_user_and_machine(
    tmp_path: Path, captured: io.StringIO
) -> None:
    settings = Settings(velocity_data_dir=tmp_path, _env_file=None)  # type: ignore[call-arg]
    async with in_process(settings) as (o, _app):
        await import_project(o)
        created = await o.client.post(
            "/v1/previews", json={"project_id": "my-app"}, headers={**o.auth(), "x-request-id": "req-7f3a"}
        )
        assert created.headers["x-request-id"] == "req-7f3a"
        preview_id = created.json()["id"]
        ready = await o.runtime.previews.settled(preview_id, timeout=5)
        await o.client.delete(f"/v1/previews/{preview_id}", headers=o.auth())
        token = o.runtime.issuer.mint_user("alice")
    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    mine = {line["event"]: line for line in lines if line.get("preview_id") == preview_id}
    created_line = mine["preview created for project my-app"]
    assert (created_line["request_id"], created_line["user_id"], created_line["level"]) == (
        "req-7f3a",
        "alice",
        "info",
    )
    ready_line = next(line for event, line in mine.items() if event.startswith("preview ready after"))
    assert ready_line["request_id"] == "req-7f3a", "the launch carries the request that started it"
    assert ready_line["machine_id"] == ready.machine_id and ready_line["user_id"] == "alice"
    stopped = mine["preview stopped: deleted by its owner"]
    assert stopped["machine_id"] == ready.machine_id and stopped["logger"] == "velocity.service.previews"
    assert all("timestamp" in line for line in lines)
    text = captured.getvalue()
    assert token.split(".")[2] not in text and "AGENT_TOKEN" not in text


def test_in_a_terminal_lines_are_readable_text(captured: io.StringIO) -> None:
    out = io.StringIO()
    logs.configure(json_lines=False, stream=out)
    with logs.bound(preview_id="p1", user_id="u1"):
        logging.getLogger("velocity.test").warning("preview %s failed: %s", "p1", "out of memory")
    line = out.getvalue().strip()
    assert "preview p1 failed: out of memory" in line and "preview_id=p1" in line and "user_id=u1" in line
    assert not line.startswith("{")


def test_an_answer_carries_a_request_id_the_caller_did_not_give(tmp_path: Path) -> None:
    """A new id when none (or a nonsense one) is given, so an operator can find the request's lines."""
    import asyncio

    async def ask() -> tuple[str, str]:
        settings = Settings(velocity_data_dir=tmp_path, _env_file=None)  # type: ignore[call-arg]
        async with in_process(settings) as (o, _app):
            plain = await o.client.get("/healthz")
            odd = await o.client.get("/healthz", headers={"x-request-id": "no spaces allowed\tnor tabs"})
            return plain.headers["x-request-id"], odd.headers["x-request-id"]

    plain, odd = asyncio.run(ask())
    assert len(plain) == 16 and len(odd) == 16 and plain != odd
