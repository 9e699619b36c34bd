"""Previews created per second through the orchestrator's HTTP API, and the Fly API calls each one costs.

    .venv/bin/python -m bench.orchestrator_api                           # 5 runs of 500 previews, 50 clients
    .venv/bin/python -m bench.orchestrator_api --runs 3 --previews 200   # quicker

The orchestrator as ``velocity serve`` composes it (``Runtime``: store, service, API, router; SQLite in a
fresh data directory), with ``PREVIEW_PROVIDER=fly``, served by uvicorn on a loopback port. No agent runs:
a mock answers every ``/health`` with ``ready``, so "ready" measures the orchestrator, not npm or Vite.
Machines are simulated with zero latency, in two set-ups measured one after the other:

* ``fly-emulator``: the ``FlyProvider`` talks over ASGI to the Fly emulator, whose machines are simulated:
  the Fly client, the provider and the Machines API are on the path as in production, and the emulator
  counts the calls. The emulator runs in the same process, so this set-up also pays for work that Fly
  would do: a lower bound.
* ``direct``: a ``SimulatedProvider`` handed to the service: the orchestrator's own ceiling (API, auth,
  store, background tasks), with nothing of Fly's cost in it.

1. Throughput. ``--previews`` previews, each for its own user (tokens minted per user, each with its own
   project, so ``MAX_CONTAINERS_PER_USER`` and the per-user create rate never refuse one), posted by
   ``--clients`` concurrent clients; ``--runs`` times per set-up, each on a fresh orchestrator and
   database; medians of the runs. The API answers 201 once the row is written and leaves the machine to a
   background task, so two rates: POST → 201 (the API) and POST → ready (machine created, agent asked,
   preview marked ready; from the row's ``ready_at``). Fly's rate limits are off here: with them an app
   gets at most ~1 create/s, which ``bench.fly_api`` measures. The clients share the process and its
   event loop with the orchestrator, so the rates are lower bounds.
2. Calls per lifecycle. ``--lifecycles`` previews one after another, POST → ready → DELETE → machine
   destroyed, through the emulator with Fly's documented limits enforced by the emulator and the client's
   limiter as in production; the emulator's count per action (target: create 1, wait <= 2, destroy 1;
   no 429).

Writes ``bench/results/orchestrator_api.json`` and prints a summary. Times are reported, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import shutil
import socket
import statistics
import sys
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from velocity.auth import Caller
from velocity.emulator import Faults, FlyEmulator
from velocity.fly import FlyClient, RateLimiter
from velocity.fly.machine_config import MachinePlan
from velocity.fly.ratelimit import UNLIMITED
from velocity.providers.base import MachineProvider
from velocity.providers.fly import FlyProvider
from velocity.providers.simulated import SimulatedProvider
from velocity.runtime import Runtime, resolve_local_defaults
from velocity.service import AgentClient
from velocity.settings import Settings

APP = "velocity-preview-containers"
TOKEN = "bench-token"
RESULTS = Path(__file__).parent / "results" / "orchestrator_api.json"
SETUPS = ("fly-emulator", "direct")
NO_LIMIT = UNLIMITED


def project_archive() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        data = b'{"name": "bench", "scripts": {"dev": "vite"}}'
        info = tarfile.TarInfo("package.json")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def ready_agent(request: httpx.Request) -> httpx.Response:
    """Every machine's agent, answering at once that it serves."""
    return httpx.Response(200, json={"state": "ready", "detail": None, "protocol": 1})


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@dataclass
class Orchestrator:
    runtime: Runtime
    emulator: FlyEmulator | None  # None when the service has the simulated machines directly
    url: str


@contextlib.asynccontextmanager
async def orchestrator(*, setup: str, fly_limits: bool = False) -> AsyncIterator[Orchestrator]:
    """A fresh orchestrator on 127.0.0.1:<free port> with simulated machines, behind the emulator or not."""
    data = Path(tempfile.mkdtemp(prefix="vp-bench-"))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    port = sock.getsockname()[1]
    settings = resolve_local_defaults(
        Settings(
            velocity_data_dir=data,
            velocity_port=port,
            preview_provider="fly",
            fly_api_token=TOKEN,
            fly_app_name=APP,
            fly_regions=["ord"],
            fly_machine_id=None,
            fly_agent_route="private-network",
            _env_file=None,  # type: ignore[call-arg]
        )
    )
    emulator: FlyEmulator | None = None
    provider: MachineProvider
    if setup == "direct":
        provider = SimulatedProvider()
    else:
        emulator = FlyEmulator(tokens=[TOKEN], faults=Faults(enforce_rate_limits=fly_limits))
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=emulator), base_url="http://fly.bench")
        limiter = None if fly_limits else RateLimiter(rates={}, default=NO_LIMIT)
        client = FlyClient(http, app=APP, token=TOKEN, limiter=limiter)
        provider = FlyProvider(client, MachinePlan.from_settings(settings))
    runtime = await Runtime.open(
        settings, provider=provider, agents=AgentClient(httpx.MockTransport(ready_agent))
    )
    server = _QuietServer(uvicorn.Config(runtime.asgi(), lifespan="off", log_level="warning", backlog=2048))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield Orchestrator(runtime, emulator, f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        await serving
        await runtime.close(stop_previews=False)  # the machines go with the emulator or the provider
        if emulator is not None:
            await emulator.aclose()
        sock.close()
        shutil.rmtree(data, ignore_errors=True)


async def users_with_projects(runtime: Runtime, count: int, prefix: str) -> list[tuple[str, str]]:
    """``count`` users, each owning one project; their (project id, bearer token)."""
    archive = project_archive()
    users = []
    for index in range(count):
        user = f"{prefix}-user-{index}"
        project_id = f"{prefix}-{index}"
        caller = Caller(subject=user, role="authenticated")
        await runtime.projects.import_archive(caller, project_id, name=project_id, archive=archive)
        users.append((project_id, runtime.issuer.mint_user(user)))
    return users


async def throughput_run(setup: str, previews: int, clients: int) -> dict[str, Any]:
    async with orchestrator(setup=setup) as o:
        users = await users_with_projects(o.runtime, previews, "tp")
        queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        for user in users:
            queue.put_nowait(user)
        created: list[float] = []
        posted_at: dict[str, datetime] = {}
        statuses: Counter[int] = Counter()

        async def client(http: httpx.AsyncClient) -> None:
            while not queue.empty():
                project_id, token = queue.get_nowait()
                posted, wall = time.perf_counter(), datetime.now(UTC)
                response = await http.post(
                    "/v1/previews",
                    json={"project_id": project_id},
                    headers={"authorization": f"Bearer {token}"},
                )
                statuses[response.status_code] += 1
                if response.status_code == 201:
                    created.append(time.perf_counter() - posted)
                    posted_at[response.json()["id"]] = wall

        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(base_url=o.url, limits=limits, timeout=60) as http:
            # One call first, so that token verification has its keys (JWKS) before the clock starts.
            warm = await http.get("/v1/previews", headers={"authorization": f"Bearer {users[0][1]}"})
            warm.raise_for_status()
            began, began_wall = time.perf_counter(), datetime.now(UTC)
            await asyncio.gather(*(client(http) for _ in range(clients)))
            all_created = time.perf_counter() - began
        # When each became ready is the row's ready_at, written by the service. One waiter at a time:
        # every state change wakes every waiter of the service to re-read its row, and hundreds of
        # waiters would make the benchmark the load.
        ready: list[float] = []
        last_ready = began_wall
        not_ready: Counter[str] = Counter()
        for preview_id, wall in posted_at.items():
            settled = await o.runtime.previews.settled(preview_id, timeout=120)
            if settled.ready_at is None:
                not_ready[settled.state.value] += 1
                continue
            ready.append((settled.ready_at - wall).total_seconds())
            last_ready = max(last_ready, settled.ready_at)
        all_ready = (last_ready - began_wall).total_seconds()
        return {
            "previews": previews,
            "statuses": {str(k): v for k, v in statuses.items()},
            "created": len(created),
            "ready": len(ready),
            "not_ready": dict(not_ready),
            "created_per_s": len(created) / all_created,
            "ready_per_s": len(ready) / all_ready if ready else 0.0,
            "post_to_201_s": percentiles(created),
            "post_to_ready_s": percentiles(ready),
            "fly_calls": dict(o.emulator.stats.calls) if o.emulator else None,
        }


async def lifecycles(count: int) -> dict[str, Any]:
    """Previews one at a time through the API, Fly's limits enforced; Fly API calls of each."""
    async with orchestrator(setup="fly-emulator", fly_limits=True) as o:
        assert o.emulator is not None
        users = await users_with_projects(o.runtime, count, "lc")
        per_run: list[Counter[str]] = []
        async with httpx.AsyncClient(base_url=o.url, timeout=60) as http:
            for project_id, token in users:
                auth = {"authorization": f"Bearer {token}"}
                before = Counter(o.emulator.stats.calls)
                response = await http.post("/v1/previews", json={"project_id": project_id}, headers=auth)
                preview_id = response.json()["id"]
                settled = await o.runtime.previews.settled(preview_id, timeout=60)
                if settled.state.value != "ready" or settled.machine_id is None:
                    raise RuntimeError(
                        f"preview {preview_id} is {settled.state.value}: {settled.failure_reason}"
                    )
                machine = o.emulator.fleet.machines[settled.machine_id]
                await http.delete(f"/v1/previews/{preview_id}", headers=auth)
                async with asyncio.timeout(30):
                    await o.emulator.fleet.wait(machine, frozenset({"destroyed"}), after_event=None)
                per_run.append(Counter(o.emulator.stats.calls) - before)
        actions = sorted({action for run in per_run for action in run})
        return {
            "lifecycles": count,
            "calls_per_lifecycle": {
                a: {"mean": statistics.fmean(r[a] for r in per_run), "max": max(r[a] for r in per_run)}
                for a in actions
            },
            "total_per_lifecycle": statistics.fmean(sum(r.values()) for r in per_run),
            "status_429": o.emulator.stats.statuses.get(429, 0),
        }


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 5)

    return {"p50": pick(0.5), "p99": pick(0.99), "max": round(ordered[-1], 5)}


async def throughput(setup: str, args: argparse.Namespace) -> dict[str, Any]:
    runs = [await throughput_run(setup, args.previews, args.clients) for _ in range(args.runs)]

    def median(key: str, sub: str | None = None) -> float:
        return round(statistics.median(run[key][sub] if sub else run[key] for run in runs), 5)

    return {
        "median_created_per_s": median("created_per_s"),
        "median_ready_per_s": median("ready_per_s"),
        "median_post_to_201_p50_s": median("post_to_201_s", "p50"),
        "median_post_to_201_p99_s": median("post_to_201_s", "p99"),
        "median_post_to_ready_p50_s": median("post_to_ready_s", "p50"),
        "median_post_to_ready_p99_s": median("post_to_ready_s", "p99"),
        "runs": runs,
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.orchestrator_api", *sys.argv[1:]]),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "store": "SQLite in a fresh data directory",
        "clients": args.clients,
        "previews_per_run": args.previews,
        "throughput": {setup: await throughput(setup, args) for setup in SETUPS},
        "lifecycle": await lifecycles(args.lifecycles),
    }


def report(result: dict[str, Any]) -> None:
    print(
        f"{result['previews_per_run']} previews per run, {result['clients']} concurrent clients, "
        "simulated machines with zero latency, no rate limits (medians of the runs):"
    )
    for setup, t in result["throughput"].items():
        print(f"  {setup}:")
        print(
            f"    POST -> 201    {t['median_created_per_s']:.0f} previews/s; latency "
            f"p50 {t['median_post_to_201_p50_s'] * 1000:.0f} ms, p99 {t['median_post_to_201_p99_s'] * 1000:.0f} ms"
        )
        print(
            f"    POST -> ready  {t['median_ready_per_s']:.0f} previews/s; latency "
            f"p50 {t['median_post_to_ready_p50_s'] * 1000:.0f} ms, p99 {t['median_post_to_ready_p99_s'] * 1000:.0f} ms"
        )
        runs = ", ".join(f"{run['created_per_s']:.0f}" for run in t["runs"])
        print(f"    created/s per run: {runs}")
    life = result["lifecycle"]
    print(
        f"Fly API calls per preview lifecycle through the orchestrator ({life['lifecycles']} runs, Fly's limits on):"
    )
    for action, counts in life["calls_per_lifecycle"].items():
        print(f"  {action:<8} mean {counts['mean']:.2f}  max {counts['max']}")
    print(f"  total    mean {life['total_per_lifecycle']:.2f}   429s: {life['status_429']}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--previews", type=int, default=500, help="previews per run")
    parser.add_argument("--clients", type=int, default=50, help="concurrent API clients")
    parser.add_argument("--lifecycles", type=int, default=10)
    result = asyncio.run(main(parser.parse_args()))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    report(result)
    print(f"written to {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}")
