"""The world of the chaos tests: ``velocity serve`` as a process of its own on PostgreSQL, the Fly
emulator in this process (machines simulated, their agents one stand-in that says it serves), and
the checks that nothing leaked or stuck."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.api.test_previews_api import APP
from tests.e2e.harness import QuietServer
from tests.store.conftest import postgres_store
from velocity.auth import TokenIssuer
from velocity.emulator import Faults, FlyEmulator
from velocity.providers.simulated import SimulatedLatencies, SimulatedProvider

VELOCITY = str(Path(sys.executable).with_name("velocity"))
SECRET = "crash-safety-jwt-secret-of-at-least-32-bytes"
FLY_TOKEN = "crash-token"
TRANSIENT = {"provisioning", "booting", "stopping"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[tuple[str, QuietServer]]:
    """``app`` on a loopback port; the socket listens first, so early requests wait in its backlog."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    # Long-polls of a killed orchestrator (a machine wait lasts up to 60 s) do not hold up the end.
    server = QuietServer(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=1))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", server
    finally:
        server.should_exit = True
        await task
        sock.close()


def stand_in_agent() -> Starlette:
    """Every simulated machine's agent: serving at once."""

    async def health(_request: Request) -> JSONResponse:
        return JSONResponse({"state": "ready", "detail": None, "protocol": 1})

    async def logs(_request: Request) -> JSONResponse:
        return JSONResponse({"lines": [{"stream": "stdout", "line": "stand-in agent"}]})

    return Starlette(routes=[Route("/health", health), Route("/__velocity/logs", logs)])


class Orchestrator:
    def __init__(self, env: dict[str, str], port: int, log: Path, *, keep_previews: bool = True) -> None:
        self.env = env
        # ``--keep-previews``: a stop leaves the previews running for the next start to adopt.
        self.arguments = ["serve", "--keep-previews"] if keep_previews else ["serve"]
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                VELOCITY, *self.arguments, env=self.env, stdout=log, stderr=log
            )
        async with httpx.AsyncClient() as client, asyncio.timeout(30):
            while True:
                assert self.process.returncode is None, self.log.read_text()[-3000:]
                with suppress(httpx.HTTPError):
                    if (await client.get(f"{self.url}/healthz")).status_code == 200:
                        return
                await asyncio.sleep(0.05)  # the process offers no event for "listening"

    async def kill(self) -> None:
        assert self.process is not None
        assert self.process.returncode is None, (
            f"the orchestrator ended by itself ({self.process.returncode}): {self.log.read_text()[-4000:]}"
        )
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            await self.kill()


async def finished(server: QuietServer, emulator: FlyEmulator) -> None:
    """Until the emulator has read every request the dead process sent (its connections closed)
    and finished every change among them."""
    async with asyncio.timeout(30):
        while True:
            if not server.server_state.connections:
                await emulator.quiet()
                return
            await asyncio.sleep(0.01)  # uvicorn offers no event for a closed connection


async def traffic(
    url: str, tokens: dict[str, str], operator: str, rng: random.Random, projects: int
) -> list[int]:
    """What users and the reaper do at once: creates (some beyond the quota), deletes, passes; the
    status of every answer that came before the kill."""
    statuses: list[int] = []

    async def answered(response: httpx.Response) -> None:
        statuses.append(response.status_code)

    hooks = {"response": [answered]}
    async with httpx.AsyncClient(base_url=url, timeout=10, event_hooks=hooks) as client:

        async def user(name: str, token: str) -> None:
            auth = {"authorization": f"Bearer {token}"}
            for _ in range(4):
                if rng.random() < 0.6:
                    project = f"{name}-{rng.randrange(projects)}"
                    await client.post("/v1/previews", json={"project_id": project}, headers=auth)
                else:
                    listed = (await client.get("/v1/previews", headers=auth)).json().get("previews", [])
                    live = [p for p in listed if p["state"] not in ("stopped", "failed")]
                    if live:
                        await client.delete(f"/v1/previews/{rng.choice(live)['id']}", headers=auth)

        async def reaper() -> None:
            await client.post("/v1/admin/maintenance", headers={"authorization": f"Bearer {operator}"})

        with suppress(httpx.HTTPError):
            await asyncio.gather(*(user(n, t) for n, t in tokens.items()), reaper())
    return statuses


async def import_projects(url: str, tokens: dict[str, str], projects: int, archive: bytes = APP) -> None:
    async with httpx.AsyncClient(base_url=url) as client:
        for name, token in tokens.items():
            for n in range(projects):
                answer = await client.put(
                    f"/v1/projects/{name}-{n}",
                    content=archive,
                    headers={"authorization": f"Bearer {token}", "content-type": "application/gzip"},
                )
                assert answer.status_code == 200, answer.text


async def check(
    url: str, operator: str, emulator: FlyEmulator, database: str, where: str, *, limit: int
) -> None:
    """One pass, then: no machine of ours without a live preview, no live preview without a machine,
    none left in a transient state, no user over the quota."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        done = await client.post("/v1/admin/maintenance", headers={"authorization": f"Bearer {operator}"})
        assert done.status_code == 200, (where, done.text)
        where += f" (pass at {datetime.now(UTC)}: {done.json()['done']})"
    db = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:5432/{database}")
    try:
        # Previews the pass adopted while booting finish booting (the stand-in answers at once).
        async with asyncio.timeout(15):
            while True:
                booting = await db.fetchval(
                    "SELECT count(*) FROM previews WHERE state IN ('provisioning', 'booting')"
                )
                if booting == 0:
                    break
                await asyncio.sleep(0.05)
        rows = await db.fetch("SELECT id, user_id, state, machine_id FROM previews")
    finally:
        await db.close()
    live = [r for r in rows if r["state"] not in ("stopped", "failed")]
    # Fly's view (the emulator's machines), not the simulation behind it. A destroy the pass asked
    # for finishes on Fly's side whatever the orchestrator does next: wait for those to end.
    async with asyncio.timeout(15):
        for machine in [m for m in emulator.fleet.machines.values() if m.state == "destroying"]:
            await emulator.fleet.wait(machine, frozenset({"destroyed"}), after_event=None)
    machines = [m for m in emulator.fleet.machines.values() if m.state != "destroyed"]
    live_ids = {r["id"] for r in live}
    rows_by_id = {r["id"]: dict(r) for r in rows}
    orphans = []
    for machine in machines:
        preview_id = (machine.config.get("metadata") or {}).get("velocity_preview_id")
        if preview_id not in live_ids:
            orphans.append((machine.id, machine.state, str(machine.created_at), rows_by_id.get(preview_id)))
    assert orphans == [], f"{where}: machines without a live preview: {orphans}"
    machine_ids = {m.id for m in machines}
    homeless = [r["id"] for r in live if r["machine_id"] not in machine_ids]
    assert homeless == [], f"{where}: live previews without a machine: {homeless}"
    stuck = [(r["id"], r["state"]) for r in rows if r["state"] in TRANSIENT]
    assert stuck == [], f"{where}: previews left in a transient state: {stuck}"
    per_user: dict[str, int] = {}
    for row in live:
        per_user[row["user_id"]] = per_user.get(row["user_id"], 0) + 1
    assert max(per_user.values(), default=0) <= limit, f"{where}: quota exceeded: {per_user}"


@dataclass
class World:
    orchestrator: Orchestrator
    emulator: FlyEmulator
    fly_server: QuietServer
    database: str
    tokens: dict[str, str]  # user: token
    operator: str

    async def check(self, where: str, *, limit: int) -> None:
        await check(self.orchestrator.url, self.operator, self.emulator, self.database, where, limit=limit)


@asynccontextmanager
async def world(
    tmp_path: Path, *, users: int, projects: int, limit: int, faults: Faults, **env: str
) -> AsyncIterator[World]:
    """A started orchestrator with ``users`` users of ``projects`` projects each, on the emulator with
    ``faults``; ``env`` adds settings."""
    issuer = TokenIssuer(SECRET, issuer="http://127.0.0.1/auth/v1")
    provider = SimulatedProvider(SimulatedLatencies(create=0.05, boot=0.1, destroy=0.02))
    emulator = FlyEmulator(provider, tokens=[FLY_TOKEN], faults=faults)
    async with postgres_store() as (_store, database), serving(stand_in_agent()) as (agent_url, _):
        provider.agent_url = agent_url
        async with serving(emulator) as (fly_url, fly_server):
            port = free_port()
            settings = {
                **{k: v for k, v in os.environ.items() if not k.startswith(("FLY_", "VELOCITY_"))},
                "PREVIEW_PROVIDER": "fly",
                "FLY_API_BASE_URL": fly_url,
                "FLY_API_TOKEN": FLY_TOKEN,
                "FLY_AGENT_ROUTE": "emulator",
                "DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/{database}",
                "SUPABASE_JWT_SECRET": SECRET,
                "SUPABASE_URL": "http://127.0.0.1",
                "VELOCITY_PORT": str(port),
                "VELOCITY_DATA_DIR": str(tmp_path / "data"),
                "VELOCITY_INSTANCE_ID": "orchestrator-1",
                "MAX_CONTAINERS_PER_USER": str(limit),
                "PREVIEW_CREATE_RATE_PER_MINUTE": "100000",
                "PREVIEW_CREATE_BURST": "100000",
                **env,
            }
            orchestrator = Orchestrator(settings, port, tmp_path / "orchestrator.log")
            tokens = {f"user{n}": issuer.mint_user(f"user{n}") for n in range(users)}
            await orchestrator.start()
            try:
                await import_projects(orchestrator.url, tokens, projects)
                yield World(
                    orchestrator,
                    emulator,
                    fly_server,
                    database,
                    tokens,
                    issuer.mint_user("ops", operator=True),
                )
            finally:
                await orchestrator.stop()
