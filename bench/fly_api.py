"""Fly API calls per preview lifecycle, and a burst of previews that must meet no 429, on the emulator.

    .venv/bin/python -m bench.fly_api                      # Fly's real rates: the burst takes ~100 s
    .venv/bin/python -m bench.fly_api --time-scale 10      # every rate and the window 10x faster

Level: the Fly provider and client, in process, over ASGI to the emulator (simulated machines with zero
latency, Fly's documented rate limits enforced: 1 req/s per action per machine or app, burst 3; get
5/s, burst 10). The orchestrator API is not involved.

1. lifecycle: create, wait until started, destroy, wait until destroyed, one preview at a time; the
   emulator counts the calls of each action (target: create 1, wait <= 2, destroy 1).
2. burst: ``--previews`` previews arrive evenly within ``--window`` seconds, each living a lifecycle;
   counts the 429s the emulator answered (target: 0) and the latencies. Creates are one action on one
   app, so Fly lets through at most 3 + 1/s of them: 100 creates take at least 97 s, whatever we do;
   the client queues them instead of drawing 429s.

Writes ``bench/results/fly_api.json`` and prints a summary. Times are reported, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from velocity.domain import MachineSpec, MachineState
from velocity.emulator import Faults, FlyEmulator
from velocity.fly import FlyClient, RateLimiter
from velocity.fly.client import CLIENT_MARGIN
from velocity.fly.machine_config import MachinePlan, default_template
from velocity.providers.fly import FlyProvider
from velocity.settings import Settings

APP = "velocity-preview-containers"
TOKEN = "bench-token"
RESULTS = Path(__file__).parent / "results" / "fly_api.json"


def spec(index: int) -> MachineSpec:
    return MachineSpec(
        image="ghcr.io/velocity/preview-container:1.0.0",
        memory_mb=512,
        cpus=1,
        cpu_kind="shared",
        internal_port=8080,
        env={"PROJECT_ID": f"bench-{index}"},
        metadata={"velocity_owner": "velocity-previews", "velocity_preview_id": f"pv-{index}"},
    )


def provider_for(emulator: FlyEmulator, scale: float) -> FlyProvider:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=emulator), base_url="http://fly.bench")
    limiter = RateLimiter(scale=scale * CLIENT_MARGIN)
    client = FlyClient(http, app=APP, token=TOKEN, limiter=limiter)
    settings = Settings(fly_api_token=TOKEN, fly_app_name=APP, fly_regions=["ord"], _env_file=None)
    return FlyProvider(client, MachinePlan.from_settings(settings, default_template(settings)))


async def lifecycle(provider: FlyProvider, index: int) -> dict[str, float]:
    """One preview's machine, start to end; the seconds each step took."""
    began = time.perf_counter()
    machine = await provider.create(spec(index))
    created = time.perf_counter()
    await provider.wait(machine.id, state=MachineState.STARTED, timeout=120)
    started = time.perf_counter()
    await provider.destroy(machine.id)
    await provider.wait(machine.id, state=MachineState.DESTROYED, timeout=120)
    return {"create": created - began, "started": started - began, "total": time.perf_counter() - began}


async def calls_per_lifecycle(runs: int, scale: float) -> dict[str, Any]:
    emulator = FlyEmulator(tokens=[TOKEN], faults=Faults(rate_limit_scale=scale))
    provider = provider_for(emulator, scale)
    per_run: list[Counter[str]] = []
    try:
        for index in range(runs):
            before = Counter(emulator.stats.calls)
            await lifecycle(provider, index)
            per_run.append(Counter(emulator.stats.calls) - before)
    finally:
        await provider.aclose()
        await emulator.aclose()
    actions = sorted({action for run in per_run for action in run})
    return {
        "runs": runs,
        "calls_per_lifecycle": {
            a: {"mean": statistics.fmean(r[a] for r in per_run), "max": max(r[a] for r in per_run)}
            for a in actions
        },
        "total_per_lifecycle": statistics.fmean(sum(r.values()) for r in per_run),
        "status_429": emulator.stats.statuses.get(429, 0),
    }


async def burst(previews: int, window: float, scale: float) -> dict[str, Any]:
    emulator = FlyEmulator(tokens=[TOKEN], faults=Faults(rate_limit_scale=scale))
    provider = provider_for(emulator, scale)
    spacing = window / scale / max(previews - 1, 1)
    began = time.perf_counter()

    async def arrive(index: int) -> dict[str, float]:
        await asyncio.sleep(index * spacing)
        return await lifecycle(provider, index)

    try:
        timings = await asyncio.gather(*(arrive(index) for index in range(previews)))
    finally:
        await provider.aclose()
        await emulator.aclose()
    elapsed = time.perf_counter() - began
    create = [t["create"] for t in timings]
    started = [t["started"] for t in timings]
    return {
        "previews": previews,
        "arrival_window_s": window / scale,
        "elapsed_s": elapsed,
        "fly_floor_for_creates_s": max(0.0, previews - 3) / scale,
        "status_429": emulator.stats.statuses.get(429, 0),
        "rate_limited_by_action": dict(emulator.stats.rate_limited),
        "calls": dict(emulator.stats.calls),
        "create_latency_s": summary(create),
        "time_to_started_s": summary(started),
    }


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return {"p50": pick(0.5), "p95": pick(0.95), "p99": pick(0.99), "max": ordered[-1]}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.fly_api", *sys.argv[1:]]),
        "python": platform.python_version(),
        "time_scale": args.time_scale,
        "lifecycle": await calls_per_lifecycle(args.lifecycles, args.time_scale),
        "burst": await burst(args.previews, args.window, args.time_scale),
    }


def report(result: dict[str, Any]) -> None:
    life, burst_ = result["lifecycle"], result["burst"]
    print(f"Fly API calls per preview lifecycle ({life['runs']} runs, time scale {result['time_scale']}):")
    for action, counts in life["calls_per_lifecycle"].items():
        print(f"  {action:<8} mean {counts['mean']:.2f}  max {counts['max']}")
    print(f"  total    mean {life['total_per_lifecycle']:.2f}   429s: {life['status_429']}")
    print(
        f"Burst: {burst_['previews']} previews arriving within {burst_['arrival_window_s']:.1f}s: "
        f"{burst_['status_429']} x 429, done in {burst_['elapsed_s']:.1f}s "
        f"(Fly's create limit alone needs {burst_['fly_floor_for_creates_s']:.1f}s)"
    )
    for name in ("create_latency_s", "time_to_started_s"):
        s = burst_[name]
        print(f"  {name:<18} p50 {s['p50']:.2f}  p95 {s['p95']:.2f}  p99 {s['p99']:.2f}  max {s['max']:.2f}")
    print(f"  calls: {burst_['calls']}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lifecycles", type=int, default=20)
    parser.add_argument("--previews", type=int, default=100)
    parser.add_argument("--window", type=float, default=60.0, help="seconds in which the previews arrive")
    parser.add_argument("--time-scale", type=float, default=1.0, help="speed up every rate and the window")
    result = asyncio.run(main(parser.parse_args()))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    report(result)
    print(f"written to {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}")
