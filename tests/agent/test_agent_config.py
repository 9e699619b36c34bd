"""A missing or malformed environment stops the agent before it starts anything, naming the variable."""

from __future__ import annotations

import pytest

from tests.agent.harness import AgentFactory


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"PROJECT_ID": None}, "PROJECT_ID"),
        ({"PROJECT_ID": "  "}, "PROJECT_ID"),
        ({"SNAPSHOT_URL": "ftp://example.com/p.tgz"}, "SNAPSHOT_URL"),
        ({"AGENT_DEV_PORT": "http"}, "AGENT_DEV_PORT"),
        ({"AGENT_DEV_PORT": "70000"}, "AGENT_DEV_PORT"),
        ({"AGENT_SOCKET": None, "PORT": "-1"}, "PORT"),
        ({"AGENT_SOCKET": "/tmp/" + "s" * 120}, "AGENT_SOCKET"),
        ({"AGENT_LINGER_SECONDS": "soon"}, "AGENT_LINGER_SECONDS"),
        ({"WORKSPACE": "/dev/null/workspace"}, "WORKSPACE"),
    ],
)
async def test_a_bad_environment_exits_with_2_and_names_the_variable(
    start_agent: AgentFactory, changes: dict[str, str | None], named: str
) -> None:
    """Configuration errors exit with status 2 and a one-line message on stderr saying what to set."""
    async with start_agent(**changes) as agent:
        assert await agent.exit_code() == 2
        assert named in agent.stderr.decode()
        assert agent.lines == []
