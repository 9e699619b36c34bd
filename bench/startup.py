"""Time from POST /v1/previews to the first 200 from the preview URL, cold and warm, beside the floor.

The floor is the same work without our stack, measured in the same run on the same machine:
``npm ci`` from the same npm cache, then Vite started directly, until its first 200. Three of ours:
cold (empty npm cache), warm (warm npm cache, the agent runs ``npm ci``), cached (the owner's kept
node_modules for the same lockfile is linked in; compared with the warm floor).

    .venv/bin/python -m bench.startup [--warm-runs 7] [--cold-runs 3]

Writes bench/results/startup.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench.stats import summary
from velocity.projects import pack_directory
from velocity.server import running
from velocity.settings import Settings

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "react-vite"
RESULTS = REPO / "bench" / "results" / "startup.json"


CPUS = 1


async def ours_once(npm_cache: Path, modules_cache: Path | None = None) -> float:
    """One preview through a fresh orchestrator: POST, then GET the URL until it answers 200.

    Without ``modules_cache`` the dependency cache starts empty, so the agent runs ``npm ci`` from the
    npm cache; with it, a kept node_modules of the same owner and lockfile is linked in.
    """
    data = Path(tempfile.mkdtemp(prefix="vpb-"))
    settings = Settings(
        _env_file=None,
        velocity_data_dir=data,
        velocity_port=0,
        local_npm_cache_dir=npm_cache,
        local_modules_cache_dir=modules_cache or data / "modules",
        container_cpu_count=CPUS,
    )
    try:
        async with running(settings) as orchestrator:
            port = orchestrator.settings.velocity_port
            token = orchestrator.runtime.issuer.mint_user("bench")
            headers = {"Authorization": f"Bearer {token}"}
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=120
            ) as api:
                snapshot = pack_directory(EXAMPLE, max_bytes=settings.max_project_bytes)
                await api.put("/v1/projects/example", content=snapshot.data)
                started = time.perf_counter()
                preview = (await api.post("/v1/previews", json={"project_id": "example"})).json()
                host = f"{preview['id']}.{settings.preview_domain}:{port}"
                # The router holds a request for a booting preview until it serves.
                while (await api.get("/", headers={"host": host})).status_code != 200:  # owner's token
                    pass
                return time.perf_counter() - started
    finally:
        shutil.rmtree(data, ignore_errors=True)


def floor_once(npm_cache: Path) -> float:
    """npm ci from the same cache, then Vite directly, until its first 200: no orchestrator, no sandbox."""
    work = Path(tempfile.mkdtemp(prefix="vpf-"))
    shutil.copytree(EXAMPLE, work, dirs_exist_ok=True, ignore=shutil.ignore_patterns("node_modules"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.perf_counter()
    subprocess.run(
        ["npm", "ci", "--prefer-offline", "--no-audit", "--no-fund", "--cache", str(npm_cache)],
        cwd=work,
        check=True,
        capture_output=True,
    )
    vite = subprocess.Popen(
        ["node", "node_modules/vite/bin/vite.js", "--host", "127.0.0.1", "--port", str(port), "--strictPort"],
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with httpx.Client() as client:
            while True:
                try:
                    if client.get(f"http://127.0.0.1:{port}/").status_code == 200:
                        return time.perf_counter() - started
                except httpx.TransportError:
                    time.sleep(0.01)
    finally:
        vite.kill()
        vite.wait()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--warm-runs", type=int, default=7)
    parser.add_argument("--cold-runs", type=int, default=3)
    parser.add_argument(
        "--cpus", type=int, default=1, help="CONTAINER_CPU_COUNT of our sandboxes (the floor is not limited)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    global CPUS
    CPUS = args.cpus

    results: dict[str, Any] = {
        "machine": {"cpus": len(__import__("os").sched_getaffinity(0)), "python": platform.python_version()}
    }
    samples: dict[str, list[float]] = {
        "ours_cold": [],
        "floor_cold": [],
        "ours_warm": [],
        "floor_warm": [],
        "ours_cached": [],
    }
    for _ in range(args.cold_runs):
        for kind in ("ours", "floor"):
            cache = Path(tempfile.mkdtemp(prefix="vpc-"))
            try:
                seconds = asyncio.run(ours_once(cache)) if kind == "ours" else floor_once(cache)
            finally:
                shutil.rmtree(cache, ignore_errors=True)
            samples[f"{kind}_cold"].append(seconds)
            print(f"cold {kind:5} {seconds * 1000:8.0f} ms", flush=True)
    warm_cache = Path(tempfile.mkdtemp(prefix="vpw-"))
    kept = Path(tempfile.mkdtemp(prefix="vpm-"))
    try:
        floor_once(warm_cache)  # fill the npm cache
        asyncio.run(ours_once(warm_cache, kept))  # keep one node_modules for the "cached" runs
        for _ in range(args.warm_runs):
            runs: dict[str, Callable[[], float]] = {
                "ours_warm": lambda: asyncio.run(ours_once(warm_cache)),
                "floor_warm": lambda: floor_once(warm_cache),
                "ours_cached": lambda: asyncio.run(ours_once(warm_cache, kept)),
            }
            for name, run in runs.items():
                seconds = run()
                samples[name].append(seconds)
                print(f"{name:12} {seconds * 1000:8.0f} ms", flush=True)
    finally:
        shutil.rmtree(warm_cache, ignore_errors=True)
        shutil.rmtree(kept, ignore_errors=True)

    for name, values in samples.items():
        if values:
            results[name] = summary(values)
    for ours, floor in (
        ("ours_cold", "floor_cold"),
        ("ours_warm", "floor_warm"),
        ("ours_cached", "floor_warm"),
    ):
        if samples[ours] and samples[floor]:
            results[f"ratio_{ours.removeprefix('ours_')}_median"] = round(
                results[ours]["median"] / results[floor]["median"], 3
            )
    results["container_cpu_count"] = CPUS
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
