"""The preview image and the local sandbox run the same agent, started the same way."""

from __future__ import annotations

import json
import re

import pytest

from tests.e2e.harness import EXAMPLE, REPO, Live
from velocity.agent.guest import agent_command
from velocity.agent.identity import UserCode
from velocity.providers.local.bwrap import AGENT_ARGS

pytestmark = pytest.mark.e2e


def image_cmd() -> list[str]:
    dockerfile = (REPO / "preview-container" / "Dockerfile").read_text()
    commands = re.findall(r"^CMD (\[.*\])\s*$", dockerfile, flags=re.MULTILINE)
    assert len(commands) == 1, "the image has exactly one top-level CMD"
    parsed: list[str] = json.loads(commands[0])
    return parsed


def test_the_image_cmd_ends_in_the_local_sandboxes_agent_command() -> None:
    """CMD ["python", "-m", "velocity.agent.guest"]: the entrypoint makes the machine safe, then
    executes the same module and arguments as every local machine."""
    cmd = image_cmd()
    assert cmd == ["python", "-m", "velocity.agent.guest"]
    assert tuple(agent_command(UserCode(10001, 10001))[-2:]) == AGENT_ARGS


async def test_the_agent_started_as_the_image_starts_it_serves_health_in_a_sandbox(live: Live) -> None:
    """In a real sandbox the agent, started as the image's CMD does, answers /health with its version."""
    await live.import_project(EXAMPLE, "example")
    preview = await live.settled((await live.create("example"))["id"])
    runtime = live.running.runtime
    machine = await runtime.provider.get(preview["machine_id"])
    health = await runtime.agents.health(runtime.provider.endpoint(machine))
    assert health.state == "ready"
    assert health.protocol >= 1
    assert health.raw["agent_version"]
    assert health.raw["project_id"] == "example"
