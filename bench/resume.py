"""Resume from suspended: a request to a suspended preview until its 200, beside the same request to
the preview while it runs (the floor: router, agent and Vite, no resume), in one run, at the same
CONTAINER_CPU_COUNT.

The example is previewed in a local sandbox; each run suspends it as the reaper does after
PREVIEW_IDLE_TIMEOUT_MINUTES (the cgroup freezer), then times ``GET /`` through the router, which
resumes it. ``resume_ms`` is the service's own account (thaw, then the agent saying the dev server
serves), read from the preview's ``resumed in N ms`` event.

    .venv/bin/python -m bench.resume [--runs 20] [--cpus 1]

Writes bench/results/speed.json (its ``resume`` part, and ``resume_median_ms``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.stats import summary
from velocity.domain import PreviewState
from velocity.projects import pack_directory
from velocity.server import running
from velocity.settings import Settings

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "react-vite"
RESULTS = REPO / "bench" / "results" / "speed.json"


async def measure(runs: int, cpus: int) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix="vpr-"))
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        velocity_data_dir=data,
        velocity_port=0,
        container_cpu_count=cpus,
    )
    samples: dict[str, list[float]] = {"ready_request": [], "resumed_request": [], "resume": []}
    try:
        async with running(settings) as orchestrator:
            runtime = orchestrator.runtime
            port = orchestrator.settings.velocity_port
            headers = {"Authorization": f"Bearer {runtime.issuer.mint_user('bench')}"}
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=120
            ) as api:
                snapshot = pack_directory(EXAMPLE, max_bytes=settings.max_project_bytes)
                (await api.put("/v1/projects/example", content=snapshot.data)).raise_for_status()
                preview_id = (await api.post("/v1/previews", json={"project_id": "example"})).json()["id"]
                ready = await runtime.previews.settled(preview_id, timeout=300)
                if ready.state != PreviewState.READY:
                    raise SystemExit(f"the example did not preview: {ready.failure_reason}")
                host = {"host": f"{preview_id}.{settings.preview_domain}:{port}"}
                for _ in range(3):  # Vite's first transforms, the router's row cache
                    (await api.get("/", headers=host)).raise_for_status()
                for run in range(runs):
                    began = time.perf_counter()
                    (await api.get("/", headers=host)).raise_for_status()
                    samples["ready_request"].append(time.perf_counter() - began)
                    current = await runtime.store.get_preview(preview_id)
                    suspended = await runtime.previews.suspend(current, "idle (bench)")
                    if suspended.state != PreviewState.SUSPENDED:
                        raise SystemExit(f"run {run}: the preview is {suspended.state}, not suspended")
                    began = time.perf_counter()
                    (await api.get("/", headers=host)).raise_for_status()
                    samples["resumed_request"].append(time.perf_counter() - began)
                    events = await runtime.store.events(preview_id)
                    detail = events[-1][1].detail or ""
                    samples["resume"].append(float(detail.removeprefix("resumed in ").split()[0]) / 1000)
    finally:
        shutil.rmtree(data, ignore_errors=True)
    return {name: summary(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--cpus", type=int, default=1, help="CONTAINER_CPU_COUNT of the sandbox")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    measured = asyncio.run(measure(args.runs, args.cpus))
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    results["machine"] = {"cpus": len(os.sched_getaffinity(0)), "python": platform.python_version()}
    results["resume"] = {"container_cpu_count": args.cpus, "seconds": measured}
    results["resume_median_ms"] = round(measured["resumed_request"]["median"] * 1000, 1)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for name, stats in measured.items():
        print(
            f"{name:16} median {stats['median'] * 1000:7.1f} ms  p90 {stats['p90'] * 1000:7.1f} ms  ({stats['runs']} runs)"
        )
    print(f"resume_median_ms {results['resume_median_ms']} (request to a suspended preview until its 200)")


if __name__ == "__main__":
    main()
