"""``PREVIEW_PROVIDER=fly`` on a laptop: the orchestrator drives the Fly Machines API emulator, whose
machines are real sandboxes, and a preview serves through the router as with the local provider."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import EXAMPLE, emulated_fly, live_orchestrator
from tests.e2e.test_pool import pool_ready
from velocity.domain import PreviewState

pytestmark = pytest.mark.e2e


async def test_a_preview_made_through_the_fly_api_serves_and_is_destroyed(npm_cache: Path) -> None:
    """Create through the API, see the app through the router, delete: the Fly machine and its sandbox go."""
    async with (
        emulated_fly(npm_cache=npm_cache) as fly,
        live_orchestrator(npm_cache=npm_cache, **fly.settings()) as live,
    ):
        assert live.running.runtime.provider.name == "fly"
        await live.import_project(EXAMPLE, "example")
        preview = await live.create("example")
        ready = await live.settled(preview["id"])
        assert ready["state"] == "ready", ready["failure_reason"]
        machine = fly.emulator.fleet.machines[ready["machine_id"]]
        assert machine.state == "started"
        assert machine.config["metadata"]["velocity_preview_id"] == preview["id"]
        assert machine.backing_id is not None
        sandbox = fly.sandboxes / machine.backing_id
        assert sandbox.is_dir()

        app = await live.fetch(preview["id"], "/src/App.jsx")
        assert app.status_code == 200
        assert "Hello from Velocity" in app.text
        assert "fly-replay" not in app.headers  # off Fly the router proxies

        deleted = await live.api.delete(f"/v1/previews/{preview['id']}")
        assert deleted.json()["state"] == "stopped"
        await fly.destroyed(machine)
        assert not sandbox.exists()
        assert (await live.fetch(preview["id"], "/")).status_code == 410
        calls = fly.emulator.stats.calls
        assert (calls["create"], calls["destroy"]) == (1, 1)
        assert fly.emulator.stats.rate_limited == {}


async def test_an_idle_fly_preview_is_suspended_and_a_request_resumes_it(npm_cache: Path) -> None:
    """Idle, the preview's Fly machine is suspended through the API (its sandbox frozen, not
    destroyed); the next request through the router starts it again, from its memory."""
    async with (
        emulated_fly(npm_cache=npm_cache) as fly,
        live_orchestrator(
            npm_cache=npm_cache,
            preview_idle_timeout_minutes=0.1,
            container_cleanup_interval_minutes=0.01,
            **fly.settings(),
        ) as live,
    ):
        ready = await live.started(EXAMPLE, "example")
        machine = fly.emulator.fleet.machines[ready["machine_id"]]
        backing = machine.backing_id
        previews = live.running.runtime.previews
        await previews.wait_for(ready["id"], lambda p: p.state == PreviewState.SUSPENDED, timeout=60)
        assert machine.state == "suspended"
        assert machine.backing_id == backing, "suspended, not destroyed"
        app = await live.fetch(ready["id"], "/src/App.jsx")
        assert app.status_code == 200
        assert "Hello from Velocity" in app.text
        assert machine.state == "started"
        assert machine.backing_id == backing, "resumed from its memory, not booted afresh"
        calls = fly.emulator.stats.calls
        assert (calls["create"], calls["suspend"], calls["start"]) == (1, 1, 1)
        assert (await live.api.get(f"/v1/previews/{ready['id']}")).json()["state"] == "ready"


async def test_a_fly_preview_claims_a_pooled_machine_whose_metadata_becomes_the_preview_s(
    npm_cache: Path,
) -> None:
    """With WARM_POOL_SIZE=1 the leader creates one machine through the API ahead of any preview; a
    create then claims it: no second create call, the machine's Fly metadata names the preview
    (one PATCH), and the preview serves the project."""
    async with (
        emulated_fly(npm_cache=npm_cache) as fly,
        live_orchestrator(npm_cache=npm_cache, warm_pool_size=1, **fly.settings()) as live,
    ):
        await pool_ready(live)
        (entry,) = await live.running.runtime.store.list_pooled()
        assert fly.emulator.stats.calls["create"] == 1
        ready = await live.started(EXAMPLE, "example")
        assert ready["machine_id"] == entry.machine_id
        machine = fly.emulator.fleet.machines[ready["machine_id"]]
        assert machine.config["metadata"]["velocity_preview_id"] == ready["id"]
        app = await live.fetch(ready["id"], "/src/App.jsx")
        assert app.status_code == 200
        assert "Hello from Velocity" in app.text
