"""Time from POST /v1/previews to the first 200 from the preview URL, cold and warm, beside the floor.

The floor is the same work without our stack, measured in the same run on the same machine:
``npm ci`` from the same npm cache, then Vite started directly, until its first 200.

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


async def ours_once(npm_cache: Path) -> float:
    """One preview through a fresh orchestrator: POST, then GET the URL until it answers 200."""
    data = Path(tempfile.mkdtemp(prefix="vpb-"))
    settings = Settings(
        velocity_data_dir=data,
        velocity_port=0,
        local_npm_cache_dir=npm_cache,
        _env_file=None,  # type: ignore[call-arg]
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
                while (await api.get("/", headers={"host": host})).status_code != 200:
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
    args = parser.parse_args()

    results: dict[str, Any] = {
        "machine": {"cpus": len(__import__("os").sched_getaffinity(0)), "python": platform.python_version()}
    }
    samples: dict[str, list[float]] = {"ours_cold": [], "floor_cold": [], "ours_warm": [], "floor_warm": []}
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
    try:
        floor_once(warm_cache)  # fill the cache
        for _ in range(args.warm_runs):
            for kind in ("ours", "floor"):
                seconds = asyncio.run(ours_once(warm_cache)) if kind == "ours" else floor_once(warm_cache)
                samples[f"{kind}_warm"].append(seconds)
                print(f"warm {kind:5} {seconds * 1000:8.0f} ms", flush=True)
    finally:
        shutil.rmtree(warm_cache, ignore_errors=True)

    for name, values in samples.items():
        if values:
            results[name] = summary(values)
    for mode in ("cold", "warm"):
        if samples[f"ours_{mode}"] and samples[f"floor_{mode}"]:
            results[f"ratio_{mode}_median"] = round(
                results[f"ours_{mode}"]["median"] / results[f"floor_{mode}"]["median"], 3
            )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
