"""Fly misbehaving as it does: 429s with Retry-After (and its real rate limits), 503s, slow answers,
creates whose answer is lost, a region out of capacity. Every preview comes up within
CONTAINER_TIMEOUT_SECONDS, in the region with room, none gets two machines (a lost create is found
by its tag, not made again), every create is answered 201, and after one pass nothing leaked."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.chaos.harness import world
from velocity.emulator import Faults

pytestmark = pytest.mark.e2e

USERS = 8
TIMEOUT = 45  # CONTAINER_TIMEOUT_SECONDS


async def test_previews_come_up_or_fail_clearly_through_fly_s_failures(tmp_path: Path) -> None:
    faults = Faults(
        enforce_rate_limits=True,  # Fly's documented limits
        throttle_next=6,
        retry_after=1,
        server_errors_next=6,
        slow_seconds=0.05,
        lost_creates_next=3,
        full_regions=frozenset({"ord"}),
    )
    async with world(
        tmp_path,
        users=USERS,
        projects=1,
        limit=1,
        faults=faults,
        FLY_REGIONS="ord,iad",
        CONTAINER_TIMEOUT_SECONDS=str(TIMEOUT),
    ) as chaos:
        async with httpx.AsyncClient(base_url=chaos.orchestrator.url, timeout=60) as client:
            answers = await asyncio.gather(
                *(
                    client.post(
                        "/v1/previews",
                        json={"project_id": f"{user}-0"},
                        headers={"authorization": f"Bearer {token}"},
                    )
                    for user, token in chaos.tokens.items()
                )
            )
        assert [a.status_code for a in answers] == [201] * USERS, [a.text for a in answers]
        db = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:5432/{chaos.database}")
        try:
            async with asyncio.timeout(TIMEOUT + 15):
                while True:
                    waiting = await db.fetchval(
                        "SELECT count(*) FROM previews WHERE state IN ('provisioning', 'booting')"
                    )
                    if waiting == 0:
                        break
                    await asyncio.sleep(0.1)
            rows = await db.fetch("SELECT id, state, created_at, updated_at FROM previews")
        finally:
            await db.close()
        # Every one of these faults is one a client can get through: all come up, in time.
        assert [r["state"] for r in rows] == ["ready"] * USERS, [dict(r) for r in rows]
        for row in rows:
            assert (row["updated_at"] - row["created_at"]).total_seconds() <= TIMEOUT, dict(row)
        per_preview = Counter(
            (m.config.get("metadata") or {}).get("velocity_preview_id")
            for m in chaos.emulator.fleet.machines.values()
        )
        assert max(per_preview.values()) == 1, per_preview
        assert {m.region for m in chaos.emulator.fleet.machines.values()} == {"iad"}
        stats = chaos.emulator.stats
        assert stats.statuses[429] >= 6 and stats.statuses[503] >= 6, stats.statuses
        assert stats.statuses[504] == 3, "three creates were made with their answers lost"
        await chaos.check("after the faults", limit=1)
