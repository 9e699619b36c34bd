"""An orchestrator with real local sandboxes killed (SIGKILL) at random points of creates, deletes
and reaping, five times: after each restart and one maintenance pass, every live preview has its
sandbox, every sandbox, cgroup and process on the host belongs to a live preview, and none is stuck.

``velocity serve --keep-previews`` runs as a process of its own on its SQLite file, with bubblewrap
sandboxes that outlive it (as a laptop's do when the orchestrator crashes); the project has no
dependencies, so nothing waits on npm. The points come from a seeded generator: a failure names the
seed and iteration that reproduce it.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import sqlite3
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.api.test_previews_api import tarball
from tests.chaos.harness import Orchestrator, free_port, import_projects, traffic
from velocity.auth import TokenIssuer
from velocity.providers.local import cgroups

pytestmark = pytest.mark.e2e

ITERATIONS = 5
SEED = 20261208
USERS = 2
PROJECTS = 3  # per user
LIMIT = 2  # MAX_CONTAINERS_PER_USER: below PROJECTS, so the quota is tested too
SECRET = "crash-sandboxes-jwt-secret-of-at-least-32-bytes"
PLAIN = Path(__file__).parents[1] / "e2e" / "projects" / "plain"
LIVE = ("provisioning", "booting", "ready", "stopping")


@dataclass
class Laptop:
    orchestrator: Orchestrator
    data: Path
    tokens: dict[str, str]
    operator: str

    @property
    def sandboxes(self) -> Path:
        return self.data / "sandboxes"

    def rows(self) -> list[dict[str, str | None]]:
        with sqlite3.connect(self.data / "velocity.db") as db:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute("SELECT id, user_id, state, machine_id FROM previews")]

    async def check(self, where: str, seen: set[str]) -> None:
        """One pass; then the database and the host agree, and nothing of an ended preview remains."""
        async with httpx.AsyncClient(base_url=self.orchestrator.url, timeout=60) as client:
            done = await client.post(
                "/v1/admin/maintenance", headers={"authorization": f"Bearer {self.operator}"}
            )
            assert done.status_code == 200, (where, done.text)
            where += f" (pass: {done.json()['done']})"
        # Previews the pass adopted while booting finish booting (the server starts in a moment).
        async with asyncio.timeout(60):
            while True:
                if not any(r["state"] in ("provisioning", "booting") for r in self.rows()):
                    break
                await asyncio.sleep(0.1)  # another process writes the rows: polled
        # A preview that failed while booting is written failed first, then its sandbox destroyed:
        # the destroys under way end within moments (the host is another process's: polled).
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            rows = self.rows()
            live = {r["machine_id"] for r in rows if r["state"] in LIVE}
            on_disk = {d.name for d in self.sandboxes.iterdir() if not d.name.startswith(".")}
            if on_disk == live or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.1)
        seen |= {r["machine_id"] for r in rows if r["machine_id"]} | on_disk
        assert on_disk == live, f"{where}: sandboxes {sorted(on_disk)} but live previews' {sorted(live)}"
        assert None not in live, f"{where}: a live preview without a sandbox: {rows}"
        assert not [r for r in rows if r["state"] == "stopping"], f"{where}: stuck stopping: {rows}"
        for machine_id in live:
            record = json.loads((self.sandboxes / str(machine_id) / "machine.json").read_text())
            assert Path(f"/proc/{record['pid']}").exists(), f"{where}: {machine_id}'s sandbox is not running"
        version = cgroups.detect_version()
        for machine_id in seen - live:
            if version is not None:
                group = cgroups.attach(str(machine_id), version=version)
                left = [d for d in group.dirs.values() if d.exists()]
                assert left == [], f"{where}: ended {machine_id} left its cgroup {left}"
            running = [
                p for p in Path("/proc").iterdir() if p.name.isdigit() and _mentions(p, str(machine_id))
            ]
            assert running == [], f"{where}: ended {machine_id} left processes {running}"
        per_user: dict[str, int] = {}
        for row in rows:
            if row["state"] in LIVE:
                per_user[str(row["user_id"])] = per_user.get(str(row["user_id"]), 0) + 1
        assert max(per_user.values(), default=0) <= LIMIT, f"{where}: quota exceeded: {per_user}"


def _mentions(process: Path, text: str) -> bool:
    try:
        return text.encode() in (process / "cmdline").read_bytes()
    except OSError:  # it ended while we looked
        return False


@asynccontextmanager
async def laptop(tmp_path: Path) -> AsyncIterator[Laptop]:
    port = free_port()
    # Short: the sandboxes' unix sockets live below it (pytest's tmp_path is too long for them).
    data = Path(tempfile.mkdtemp(prefix="vp-crash-"))
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("FLY_", "VELOCITY_", "PREVIEW_", "DATABASE_"))
        },
        "PREVIEW_PROVIDER": "local",
        "VELOCITY_DATA_DIR": str(data),
        "VELOCITY_PORT": str(port),
        "VELOCITY_INSTANCE_ID": "laptop",
        "SUPABASE_JWT_SECRET": SECRET,
        "MAX_CONTAINERS_PER_USER": str(LIMIT),
        "PREVIEW_CREATE_RATE_PER_MINUTE": "100000",
        "PREVIEW_CREATE_BURST": "100000",
    }
    orchestrator = Orchestrator(env, port, tmp_path / "orchestrator.log")
    issuer = TokenIssuer(SECRET, issuer=f"http://127.0.0.1:{port}/auth/v1")
    tokens = {f"user{n}": issuer.mint_user(f"user{n}", legacy=True) for n in range(USERS)}
    await orchestrator.start()
    try:
        archive = tarball({p.name: p.read_bytes() for p in PLAIN.iterdir()})
        await import_projects(orchestrator.url, tokens, PROJECTS, archive)
        yield Laptop(orchestrator, data, tokens, issuer.mint_user("ops", operator=True, legacy=True))
    finally:
        await orchestrator.stop()
        # The last orchestrator was killed too: one more, stopped as a user stops it, ends every sandbox.
        last = Orchestrator(env, port, tmp_path / "orchestrator.log", keep_previews=False)
        await last.start()
        assert last.process is not None
        last.process.terminate()
        assert await asyncio.wait_for(last.process.wait(), 60) == 0
        left = [d.name for d in (data / "sandboxes").iterdir() if not d.name.startswith(".")]
        shutil.rmtree(data, ignore_errors=True)
        assert left == [], f"sandboxes left after the orchestrator stopped: {left}"


async def test_an_orchestrator_with_sandboxes_killed_at_random_points_leaves_nothing_behind(
    tmp_path: Path,
) -> None:
    async with laptop(tmp_path) as host:
        rng = random.Random(SEED)
        seen: set[str] = set()
        for iteration in range(ITERATIONS):
            where = f"seed {SEED}, iteration {iteration}"
            load = asyncio.create_task(
                traffic(host.orchestrator.url, host.tokens, host.operator, rng, PROJECTS)
            )
            await asyncio.sleep(rng.uniform(0.1, 1.5))
            await host.orchestrator.kill()
            statuses = await asyncio.wait_for(load, 30)
            assert 500 not in statuses, f"{where}: the API answered 500"
            await host.orchestrator.start()
            await host.check(where, seen)
        assert seen, "no sandbox was ever made: the test tested nothing"
        log = host.orchestrator.log.read_text()
        assert "Traceback" not in log, log[log.index("Traceback") - 500 :][:4000]
