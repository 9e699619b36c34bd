"""Load: a burst of creates through two orchestrator replicas on PostgreSQL, then thousands of live
previews held while the maintenance loops run, and the router's cost per proxied request.

    .venv/bin/python -m bench.load                          # 100 users x 6 creates at once, 10,000 live
    .venv/bin/python -m bench.load --live 2000 --passes 3   # quicker

The set-up is production's, on one host: two ``velocity serve`` processes (replicas ``load-1`` and
``load-2``) share a fresh PostgreSQL database, with ``PREVIEW_PROVIDER=fly`` against ``velocity
fly-emulator`` in a process of its own (machines simulated with no latency, Fly's rate limits off:
``bench.fly_api`` measures those). Every machine's agent is one stand-in in this process that says it
serves and answers any path with a 2 KiB module, as Vite would. The clients run here too, so each
rate is a lower bound for the orchestrators: all of it shares the host's CPUs.

1. Burst. ``--users`` users, each with ``--per-user + 1`` projects, post ``--per-user + 1`` creates at
   once, ``--clients`` concurrent clients alternating between the replicas, with
   ``MAX_CONTAINERS_PER_USER=--per-user``: exactly ``users x per-user`` must be created (500 by
   default) and the rest refused with 429, whichever replica each request reached. Reported:
   previews/s created (POST -> 201) overall and per replica, POST -> 201 p50/p99, time until all
   are ready, ``quota_violations`` (creates beyond a user's quota, plus users over it once settled).
2. Hold. More users' previews until ``--live`` are live, measuring at 1,000 and at ``--live`` each
   replica's RSS and the maintenance pass (``POST /v1/admin/maintenance``: reconcile against the
   emulator's machine list, then the reaper over every live row) ``--passes`` times, while the
   leader's own loop runs every ``CONTAINER_CLEANUP_INTERVAL_MINUTES`` (0.25 here).
   ``leaked_machines``: machines of ours without a live preview, plus live previews without a machine,
   after the last pass.
3. Router. At 1,000 live, ``--requests`` sequential GETs of a module through a replica's router to one
   preview, and the same GETs straight to its agent: p50/p99 of each and the difference.

Writes ``bench/results/load.json`` and prints a summary. Times are reported, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import socket
import statistics
import sys
import tarfile
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from velocity.auth import TokenIssuer
from velocity.providers.base import META_OWNER, META_PREVIEW_ID, OWNER_VALUE

RESULTS = Path(__file__).parent / "results" / "load.json"
VELOCITY = str(Path(sys.executable).with_name("velocity"))
POSTGRES = "postgresql://postgres@127.0.0.1:5432"
SECRET = "load-benchmark-jwt-secret-of-at-least-32-bytes"
FLY_TOKEN = "load-token"
APP = "velocity-load"
MODULE = b"export const x = 1;\n" * 100  # about 2 KiB, a small Vite module
LIVE_STATES = ("provisioning", "booting", "ready", "stopping")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def archive() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = b'{"name": "load", "scripts": {"dev": "vite"}}'
        info = tarfile.TarInfo("package.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    if not ordered:
        return {}

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {"p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": round(ordered[-1] * 1000, 2), "n": len(ordered)}


def stand_in_agent() -> Starlette:
    async def health(_request: Request) -> JSONResponse:
        return JSONResponse({"state": "ready", "detail": None, "protocol": 1})

    async def logs(_request: Request) -> JSONResponse:
        return JSONResponse({"lines": []})

    async def module(_request: Request) -> Response:
        return Response(MODULE, media_type="text/javascript")

    return Starlette(
        routes=[Route("/health", health), Route("/__velocity/logs", logs), Route("/{path:path}", module)]
    )


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    sock = socket.socket(
        socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP
    )  # TCP: asyncio sets TCP_NODELAY
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@asynccontextmanager
async def database() -> AsyncIterator[str]:
    name = f"velocity_load_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(f"{POSTGRES}/postgres")
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


@dataclass
class Process:
    name: str
    argv: list[str]
    env: dict[str, str]
    ready_url: str
    log: Path
    process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                *self.argv, env=self.env, stdout=log, stderr=log
            )
        async with httpx.AsyncClient() as client, asyncio.timeout(60):
            while True:
                if self.process.returncode is not None:
                    raise RuntimeError(f"{self.name} ended: {self.log.read_text()[-2000:]}")
                with suppress(httpx.HTTPError):
                    if (await client.get(self.ready_url)).status_code < 500:
                        return
                await asyncio.sleep(0.1)  # a process offers no event for "listening"

    def rss_mb(self) -> float:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
        raise RuntimeError(f"no VmRSS for {self.name}")

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                async with asyncio.timeout(30):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


@dataclass
class Cluster:
    replicas: list[Process]
    fly_url: str
    agent_url: str
    database: str
    issuer: TokenIssuer
    operator: str
    clients: int
    http: httpx.AsyncClient = field(default_factory=lambda: httpx.AsyncClient(timeout=120))
    users: dict[str, str] = field(default_factory=dict)  # user: token

    def url(self, n: int) -> str:
        return self.replicas[n % len(self.replicas)].ready_url.removesuffix("/healthz")

    async def add_users(self, prefix: str, count: int, projects: int) -> list[tuple[str, str]]:
        """``count`` users with ``projects`` projects each; their (user, project) pairs."""
        body = archive()
        pairs = [(f"{prefix}{u}", f"{prefix}{u}-p{p}") for u in range(count) for p in range(projects)]
        for user, _ in pairs:
            self.users.setdefault(user, self.issuer.mint_user(user, ttl_seconds=4 * 3600))

        async def put(n: int, user: str, project: str) -> None:
            answer = await self.http.put(
                f"{self.url(n)}/v1/projects/{project}",
                content=body,
                headers={"authorization": f"Bearer {self.users[user]}", "content-type": "application/gzip"},
            )
            answer.raise_for_status()

        await self.each(pairs, put)
        return pairs

    async def each(
        self, items: list[tuple[str, str]], call: Callable[[int, str, str], Awaitable[None]]
    ) -> None:
        """``call(n, *item)`` for every item, ``clients`` at a time; client ``n`` speaks to replica ``n % 2``."""
        queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        for item in items:
            queue.put_nowait(item)

        async def worker(n: int) -> None:
            while not queue.empty():
                await call(n, *queue.get_nowait())

        await asyncio.gather(*(worker(n) for n in range(self.clients)))

    async def create_all(self, pairs: list[tuple[str, str]]) -> dict[str, Any]:
        statuses: Counter[str] = Counter()
        latencies: list[float] = []
        by_replica: Counter[str] = Counter()
        created: Counter[str] = Counter()  # per user

        async def post(n: int, user: str, project: str) -> None:
            began = time.perf_counter()
            answer = await self.http.post(
                f"{self.url(n)}/v1/previews",
                json={"project_id": project},
                headers={"authorization": f"Bearer {self.users[user]}"},
            )
            statuses[str(answer.status_code)] += 1
            if answer.status_code == 201:
                latencies.append(time.perf_counter() - began)
                by_replica[self.replicas[n % len(self.replicas)].name] += 1
                created[user] += 1

        began = time.perf_counter()
        await self.each(pairs, post)
        wall = time.perf_counter() - began
        ready = await self.settle()
        return {
            "attempts": len(pairs),
            "statuses": dict(statuses),
            "created": sum(created.values()),
            "wall_s": round(wall, 3),
            "created_per_s": round(sum(created.values()) / wall, 1),
            "created_per_s_by_replica": {name: round(n / wall, 1) for name, n in sorted(by_replica.items())},
            "post_to_201": percentiles(latencies),
            "all_ready_after_s": round(time.perf_counter() - began, 3),
            "ready": ready,
            "created_per_user": created,
        }

    async def settle(self) -> int:
        """Until no preview is provisioning or booting; how many are ready."""
        db = await asyncpg.connect(f"{POSTGRES}/{self.database}")
        try:
            async with asyncio.timeout(300):
                while True:
                    booting = await db.fetchval(
                        "SELECT count(*) FROM previews WHERE state IN ('provisioning', 'booting')"
                    )
                    if not booting:
                        break
                    await asyncio.sleep(0.2)  # the rows change in other processes: polled
            return int(await db.fetchval("SELECT count(*) FROM previews WHERE state = 'ready'"))
        finally:
            await db.close()

    async def passes(self, count: int) -> dict[str, Any]:
        """``count`` maintenance passes on each replica, timed, and each replica's RSS."""
        times: dict[str, list[float]] = {}
        for n, replica in enumerate(self.replicas):
            for _ in range(count):
                began = time.perf_counter()
                answer = await self.http.post(
                    f"{self.url(n)}/v1/admin/maintenance",
                    headers={"authorization": f"Bearer {self.operator}"},
                )
                answer.raise_for_status()
                times.setdefault(replica.name, []).append(time.perf_counter() - began)
        return {
            "pass_s_median": {k: round(statistics.median(v), 3) for k, v in times.items()},
            "pass_s_max": {k: round(max(v), 3) for k, v in times.items()},
            "rss_mb": {r.name: r.rss_mb() for r in self.replicas},
        }

    async def census(self) -> dict[str, int]:
        """Leaks by Fly's own account (the emulator's machine list) against the database's rows."""
        listed = await self.http.get(
            f"{self.fly_url}/v1/apps/{APP}/machines",
            params={f"metadata.{META_OWNER}": OWNER_VALUE},
            headers={"authorization": f"Bearer {FLY_TOKEN}"},
        )
        listed.raise_for_status()
        machines = [m for m in listed.json() if m["state"] != "destroyed"]
        db = await asyncpg.connect(f"{POSTGRES}/{self.database}")
        try:
            rows = await db.fetch(
                "SELECT id, user_id, machine_id FROM previews WHERE state = ANY($1)", LIVE_STATES
            )
        finally:
            await db.close()
        live = {r["id"] for r in rows}
        orphans = [
            m
            for m in machines
            if (m.get("config", {}).get("metadata") or {}).get(META_PREVIEW_ID) not in live
        ]
        ids = {m["id"] for m in machines}
        homeless = [r for r in rows if r["machine_id"] not in ids]
        per_user = Counter(r["user_id"] for r in rows)
        return {
            "machines": len(machines),
            "live_previews": len(rows),
            "orphan_machines": len(orphans),
            "previews_without_machine": len(homeless),
            "max_live_per_user": max(per_user.values(), default=0),
        }

    async def router(self, requests: int) -> dict[str, Any]:
        db = await asyncpg.connect(f"{POSTGRES}/{self.database}")
        try:
            preview_id = await db.fetchval("SELECT id FROM previews WHERE state = 'ready' LIMIT 1")
        finally:
            await db.close()
        host = f"{preview_id}.preview.localhost"
        through, direct = [], []
        async with httpx.AsyncClient() as client:
            for target, headers, samples in (
                (self.url(0), {"host": host}, through),
                (self.agent_url, {}, direct),
            ):
                for n in range(requests + 50):
                    began = time.perf_counter()
                    answer = await client.get(f"{target}/src/module{n % 40}.js", headers=headers)
                    answer.raise_for_status()
                    if n >= 50:  # the first ones open connections and fill caches
                        samples.append(time.perf_counter() - began)
        return {
            "through_router": percentiles(through),
            "direct_to_agent": percentiles(direct),
            "overhead_p50_ms": round((statistics.median(through) - statistics.median(direct)) * 1000, 2),
        }


@asynccontextmanager
async def cluster(work: Path, *, per_user: int, clients: int) -> AsyncIterator[Cluster]:
    issuer = TokenIssuer(SECRET, issuer="http://127.0.0.1/auth/v1")
    async with database() as name, serving(stand_in_agent()) as agent_url:
        fly_port = free_port()
        base = {k: v for k, v in os.environ.items() if not k.startswith(("FLY_", "VELOCITY_", "PREVIEW_"))}
        emulator = Process(
            "fly-emulator",
            [
                VELOCITY,
                "fly-emulator",
                "--port",
                str(fly_port),
                "--app",
                APP,
                "--token",
                FLY_TOKEN,
                "--create-seconds",
                "0",
                "--boot-seconds",
                "0",
                "--no-rate-limits",
                "--agent-url",
                agent_url,
            ],
            base,
            f"http://127.0.0.1:{fly_port}/v1/apps/{APP}",
            work / "fly-emulator.log",
        )
        replicas = []
        for n in (1, 2):
            port = free_port()
            env = {
                **base,
                "PREVIEW_PROVIDER": "fly",
                "FLY_API_BASE_URL": f"http://127.0.0.1:{fly_port}",
                "FLY_API_TOKEN": FLY_TOKEN,
                "FLY_APP_NAME": APP,
                "FLY_AGENT_ROUTE": "emulator",
                "FLY_API_RATE_LIMITS": "false",
                "DATABASE_URL": f"{POSTGRES}/{name}",
                "SUPABASE_JWT_SECRET": SECRET,
                "SUPABASE_URL": "http://127.0.0.1",
                "VELOCITY_PORT": str(port),
                "VELOCITY_DATA_DIR": str(work / f"data-{n}"),
                "VELOCITY_INSTANCE_ID": f"load-{n}",
                "MAX_CONTAINERS_PER_USER": str(per_user),
                "PREVIEW_CREATE_RATE_PER_MINUTE": "100000",
                "PREVIEW_CREATE_BURST": "100000",
                "PREVIEW_ACCESS": "public",
                "CONTAINER_CLEANUP_INTERVAL_MINUTES": "0.25",
            }
            replicas.append(
                Process(
                    f"load-{n}",
                    [VELOCITY, "serve", "--keep-previews"],
                    env,
                    f"http://127.0.0.1:{port}/healthz",
                    work / f"load-{n}.log",
                )
            )
        started: list[Process] = []
        try:
            for process in (emulator, *replicas):
                await process.start()
                started.append(process)
            yield Cluster(
                replicas,
                emulator.ready_url.split("/v1/")[0],
                agent_url,
                name,
                issuer,
                issuer.mint_user("ops", operator=True, ttl_seconds=4 * 3600),
                clients,
            )
        finally:
            for process in reversed(started):
                await process.stop()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="vp-load-"))
    print(f"logs in {work}", flush=True)
    async with cluster(work, per_user=args.per_user, clients=args.clients) as c:
        pairs = await c.add_users("burst", args.users, args.per_user + 1)
        print(f"burst: {len(pairs)} creates by {args.users} users at once...", flush=True)
        burst = await c.create_all(pairs)
        per_user = burst.pop("created_per_user")
        over_quota = sum(max(0, n - args.per_user) for n in per_user.values())
        print(json.dumps(burst), flush=True)
        held: dict[str, Any] = {}
        router: dict[str, Any] = {}
        live = burst["created"]
        for target in sorted({1000, args.live}):
            if target > live:
                users = -(-(target - live) // args.per_user)
                more = (await c.add_users(f"hold{target}-", users, args.per_user))[: target - live]
                print(f"hold: {len(more)} more previews, to {target} live...", flush=True)
                made = await c.create_all(more)
                made.pop("created_per_user")
                live += made["created"]
            held[str(target)] = {"census": await c.census(), **await c.passes(args.passes)}
            print(json.dumps({target: held[str(target)]}), flush=True)
            if target == 1000:
                router = await c.router(args.requests)
                print(json.dumps({"router": router}), flush=True)
        final = await c.census()
    over_quota += sum(max(0, h["census"]["max_live_per_user"] - args.per_user) for h in held.values())
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m bench.load " + " ".join(sys.argv[1:]),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "set_up": "2 x velocity serve on PostgreSQL, velocity fly-emulator (simulated machines, no rate "
        "limits), one stand-in agent; clients in the benchmark's process",
        "clients": args.clients,
        "quota_violations": over_quota,
        "leaked_machines": final["orphan_machines"] + final["previews_without_machine"],
        "created_per_s": burst["created_per_s"],
        "burst": burst,
        "held": held,
        "router": router,
        "final": final,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--per-user", type=int, default=5, help="MAX_CONTAINERS_PER_USER")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--live", type=int, default=10_000)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    results = asyncio.run(run(args))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: results[k] for k in ("quota_violations", "leaked_machines", "created_per_s")}))


if __name__ == "__main__":
    main()
