"""(d) A warm-pool claim: POST /v1/previews to the first 200 from the preview URL when a pooled
machine is ready, beside the Vite floor measured in the same run at the same CPU limit: Vite started
directly on the installed example, in a cgroup of CONTAINER_CPU_COUNT CPUs, until its first 200.

One orchestrator with WARM_POOL_SIZE=1 previews the example; each run waits until the pool has a
ready machine again (its refill is not timed), creates, times, and deletes the preview.

    .venv/bin/python -m bench.pool [--runs 20] [--cpus 1]

Writes bench/results/speed.json (its ``pool`` part, and ``pool_ratio_median`` = claim / Vite floor).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.stats import summary
from velocity.domain import PoolState
from velocity.projects import pack_directory
from velocity.providers.local import cgroups
from velocity.server import running
from velocity.settings import Settings

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "react-vite"
RESULTS = REPO / "bench" / "results" / "speed.json"


async def claims(runs: int, cpus: int, floor: list[float]) -> list[float]:
    data = Path(tempfile.mkdtemp(prefix="vpp-"))
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        velocity_data_dir=data,
        velocity_port=0,
        container_cpu_count=cpus,
        warm_pool_size=1,
    )
    samples = []
    try:
        async with running(settings) as orchestrator:
            runtime = orchestrator.runtime
            port = orchestrator.settings.velocity_port
            token = runtime.issuer.mint_user("bench")
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}, timeout=120
            ) as api:
                snapshot = pack_directory(EXAMPLE, max_bytes=settings.max_project_bytes)
                await api.put("/v1/projects/example", content=snapshot.data)
                for _ in range(runs):
                    await pool_ready(runtime.store)
                    started = time.perf_counter()
                    preview = (await api.post("/v1/previews", json={"project_id": "example"})).json()
                    host = f"{preview['id']}.{settings.preview_domain}:{port}"
                    while (await api.get("/", headers={"host": host})).status_code != 200:
                        pass
                    samples.append(time.perf_counter() - started)
                    floor.append(await asyncio.to_thread(vite_floor, cpus))
                    print(
                        f"claim {samples[-1] * 1000:7.0f} ms   vite floor {floor[-1] * 1000:7.0f} ms",
                        flush=True,
                    )
                    await api.delete(f"/v1/previews/{preview['id']}")
                    await runtime.previews.ended(preview["id"], timeout=30)
    finally:
        shutil.rmtree(data, ignore_errors=True)
    return samples


async def pool_ready(store: Any) -> None:
    async with asyncio.timeout(300):
        while True:
            if any(entry.state is PoolState.READY for entry in await store.list_pooled()):
                return
            await asyncio.sleep(0.05)  # the pool's rows change in another task: polled


def vite_floor(cpus: int) -> float:
    """Vite on the installed example (setup's node_modules), in a cgroup of ``cpus`` CPUs."""
    version = cgroups.detect_version()
    if version is None:
        raise SystemExit("no writable cgroups here: the floor cannot get the same CPU limit as ours")
    group = cgroups.create(
        f"bench{secrets.token_hex(4)}",
        cgroups.Limits(memory_bytes=1 << 30, cpus=float(cpus), pids=256),
        version=version,
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    procs = [str(p) for p in group.procs_files]
    join = 'for f in "$@"; do echo $$ > "$f"; done; exec node node_modules/vite/bin/vite.js ' + (
        f"--host 127.0.0.1 --port {port} --strictPort"
    )
    started = time.perf_counter()
    vite = subprocess.Popen(
        ["sh", "-c", join, "floor", *procs], cwd=EXAMPLE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
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
        group.remove()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--cpus", type=int, default=1, help="CONTAINER_CPU_COUNT, and the floor's CPU limit")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not (EXAMPLE / "node_modules").is_dir():
        raise SystemExit(f"{EXAMPLE}/node_modules is missing: run scripts/setup first")
    floor: list[float] = []
    samples = asyncio.run(claims(args.runs, args.cpus, floor))
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    results["machine"] = {"cpus": len(os.sched_getaffinity(0)), "python": platform.python_version()}
    results["pool"] = {
        "container_cpu_count": args.cpus,
        "seconds": {"claim": summary(samples), "vite_floor": summary(floor)},
    }
    results["pool_ratio_median"] = round(summary(samples)["median"] / summary(floor)["median"], 3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["pool"], indent=2), "\npool_ratio_median", results["pool_ratio_median"])


if __name__ == "__main__":
    main()
