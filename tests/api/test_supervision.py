"""The server and the loops as ``serve`` runs them: /healthz reports the loops, and a loop that dies
of a bug stops the server, rather than leave it serving with no reaper."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from velocity.server import LoopFailed, running
from velocity.settings import Settings


def settings(tmp_path: Path) -> Settings:
    return Settings(
        velocity_data_dir=tmp_path,
        velocity_port=0,
        container_cleanup_interval_minutes=0.01,  # a pass every 0.6 s
        _env_file=None,  # type: ignore[call-arg]
    )


async def test_healthz_reports_this_replica_its_lead_and_its_loops(tmp_path: Path) -> None:
    """A lone replica leads; its heartbeat and its maintenance pass are ``ok`` with the time of
    their last success."""
    async with running(settings(tmp_path)) as orchestrator, httpx.AsyncClient() as client:
        for name in ("replica", "maintenance"):
            await asyncio.wait_for(orchestrator.runtime.monitor.first_pass(name), timeout=10)
        health = (await client.get(f"{orchestrator.settings.orchestrator_url}/healthz")).json()
        assert health["status"] == "ok"
        assert health["leader"] is True
        assert health["instance"] == orchestrator.runtime.monitor.instance
        for name in ("replica", "maintenance"):
            assert health["loops"][name]["state"] == "ok", health
            assert health["loops"][name]["last_success_at"] is not None


async def test_a_loop_that_dies_of_a_bug_stops_the_server_with_its_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(settings(tmp_path)) as orchestrator:

        async def broken() -> list[str]:
            raise KeyError("a bug in the reconciler")

        monkeypatch.setattr(orchestrator.runtime.previews, "reconcile", broken)
        with pytest.raises(LoopFailed, match="a bug in the reconciler") as raised:
            await asyncio.wait_for(orchestrator.wait(), timeout=10)
        assert isinstance(raised.value.__cause__, KeyError)
        assert orchestrator.serving.done(), "the server stopped with the loop"
