"""Attacks from user code inside a real sandbox on what the host shares with it: the agent's socket and
the npm cache. Two users, one orchestrator; the attacker's dev server carries out each attack on
request (tests/e2e/projects/intruder) and the test checks that no harm reached the other user.
Each attack is a row of docs/security.md's table."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.e2e.harness import PROJECTS, live_orchestrator
from velocity.providers.local.provider import agent_socket

pytestmark = pytest.mark.e2e

INTRUDER = PROJECTS / "intruder"


async def test_a_link_planted_for_the_agent_socket_does_not_hand_over_another_preview(
    npm_cache: Path,
) -> None:
    """The attacker replaces every place its agent's socket could be with a link to the victim's socket;
    the router still reaches the attacker's own agent, on fresh connections too, and never the victim."""
    async with live_orchestrator(npm_cache=npm_cache) as victim, victim.as_user("mallory") as mallory:
        theirs, mine = await asyncio.gather(
            victim.started(INTRUDER, "victims-app"), mallory.started(INTRUDER, "mallorys-app")
        )
        victim_socket = agent_socket(victim.settings.data_dir / "sandboxes" / theirs["machine_id"])
        assert victim_socket.exists()

        planted = await mallory.ask(mine["id"], "/plant-socket", target=str(victim_socket))
        assert planted["planted"]["/run/velocity/agent.sock"]["ok"], planted

        # Concurrent requests open new connections to the agent, each one dialled after the plant.
        answers = await asyncio.gather(*(mallory.ask(mine["id"], "/whoami") for _ in range(8)))
        assert {a["project"] for a in answers} == {"mallorys-app"}
        assert (await victim.ask(theirs["id"], "/whoami"))["project"] == "victims-app"
        # The one socket a sandbox sees is its egress proxy's, on a read-only bind it cannot replace.
        assert planted["found"] == ["/run/egress/proxy.sock"]
        assert planted["planted"]["/run/egress/proxy.sock"] == {"ok": False, "error": "EROFS"}


async def test_a_users_writes_to_the_npm_cache_never_reach_another_users_sandbox(npm_cache: Path) -> None:
    """Each user has an npm cache of their own: what one sandbox plants there (a package entry npm
    would trust) is not in another user's cache, and one user's cached packages are not readable by
    another's code."""
    async with live_orchestrator(npm_cache=npm_cache) as victim, victim.as_user("mallory") as mallory:
        mine = await mallory.started(INTRUDER, "mallorys-app")
        plant = "_cacache/index-v5/00/planted-by-mallory"
        assert (await mallory.ask(mine["id"], "/write", path=f"/cache/npm/{plant}", data="{}"))["ok"]
        seen_by_mallory = (await mallory.ask(mine["id"], "/list", path="/cache/npm"))["names"]
        assert not any(name.startswith("_cacache/content-v2/") for name in seen_by_mallory), (
            "mallory's sandbox sees packages it never fetched: another user's cache"
        )

        theirs = await victim.started(INTRUDER, "victims-app")
        seen_by_victim = (await victim.ask(theirs["id"], "/list", path="/cache/npm"))["names"]
        assert plant not in seen_by_victim
        assert any(name.startswith("_cacache/content-v2/") for name in seen_by_victim), (
            "the victim's sandbox should see its own warm cache"
        )
        # And on the host, the plant is only in mallory's directory.
        assert len(list(npm_cache.glob(f"*/{plant}"))) == 1
