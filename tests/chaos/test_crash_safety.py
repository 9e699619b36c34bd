"""An orchestrator killed (SIGKILL) at random points of creates, deletes and reaping, fifty times:
after each restart and one maintenance pass, nothing leaks and nothing is stuck.

The orchestrator runs as ``velocity serve`` runs it, a process of its own on PostgreSQL, talking to
the Fly emulator (its machines simulated) in this process, so the machines outlive each kill as
Fly's do, and the emulator finishes the calls a dead process made, as Fly does. The instance id is
fixed, as a Fly machine's is across restarts, so each new process takes over its own previews at
once. The random points come from a seeded generator: a failure names the seed and iteration that
reproduce it.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from tests.chaos.harness import finished, traffic, world
from velocity.emulator import Faults

pytestmark = pytest.mark.e2e

ITERATIONS = 50
SEED = 20261207
USERS = 4
PROJECTS = 3  # per user
LIMIT = 2  # MAX_CONTAINERS_PER_USER: below PROJECTS, so the quota is tested too


async def test_an_orchestrator_killed_at_random_points_leaves_no_leak_after_one_pass(tmp_path: Path) -> None:
    faults = Faults(enforce_rate_limits=False)
    async with world(tmp_path, users=USERS, projects=PROJECTS, limit=LIMIT, faults=faults) as chaos:
        orchestrator = chaos.orchestrator
        rng = random.Random(SEED)
        for iteration in range(ITERATIONS):
            where = f"seed {SEED}, iteration {iteration}"
            load = asyncio.create_task(traffic(orchestrator.url, chaos.tokens, chaos.operator, rng, PROJECTS))
            await asyncio.sleep(rng.uniform(0.0, 0.4))
            await orchestrator.kill()
            # Its calls fail now (connection refused or reset), and the users give up.
            statuses = await asyncio.wait_for(load, 30)
            assert 500 not in statuses, f"{where}: the API answered 500"
            await finished(chaos.fly_server, chaos.emulator)
            await orchestrator.start()
            await chaos.check(where, limit=LIMIT)
