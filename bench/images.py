"""The images: their sizes, and the time from ``podman run`` of the preview image to the example
app's first 200, built as the workflows build them on the suite's stand-in bases (tests/images).

Each run starts the preview image as the workflow's validation step does: the example project
mounted at /workspace, ``CAP_NET_ADMIN`` for the entrypoint's firewall, port 8080 published; the
clock runs from the ``podman run`` call until ``GET /`` answers 200 with the app's page. The agent's
own phases (install, dev server) are read from its /health after each run.

    .venv/bin/python -m bench.images [--runs 10]

Writes bench/results/images.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.stats import summary
from tests.e2e.harness import EXAMPLE
from tests.images import podman

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "images.json"
FIRST_200_TIMEOUT = 180.0


def run_once(image: str, env: dict[str, str], scratch: Path, index: int) -> dict[str, Any]:
    project = scratch / f"project-{index}"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("node_modules", "dist"))
    subprocess.run(["chmod", "-R", "a+rwX", str(project)], check=True)
    name = f"vp-bench-{os.getpid()}-{index}"
    began = time.monotonic()
    podman.run(
        [
            "podman", "run", "--detach", "--name", name, "--cap-add", "NET_ADMIN",
            "--publish", "127.0.0.1::8080", "--env", f"PROJECT_ID=bench-{index}",
            "--volume", f"{project}:/workspace", image,
        ],
        env,
    )  # fmt: skip
    try:
        port = podman.run(["podman", "port", name, "8080"], env).stdout.strip().rsplit(":", 1)[1]
        first_200 = until_app(f"http://127.0.0.1:{port}/", began)
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).json()
    finally:
        subprocess.run(["podman", "rm", "--force", name], env=env, capture_output=True, check=False)
        shutil.rmtree(project, ignore_errors=True)
    return {"first_200_s": first_200, "timings_ms": health["timings"]}


def until_app(url: str, began: float) -> float:
    """Seconds from ``began`` until ``url`` answers 200 with the app's page (nothing to wait on but
    the port: it is polled every 20 ms)."""
    with httpx.Client(timeout=5) as client:
        while True:
            try:
                answer = client.get(url)
                if answer.status_code == 200 and 'id="root"' in answer.text:
                    return time.monotonic() - began
            except httpx.TransportError:
                pass
            if time.monotonic() - began > FIRST_200_TIMEOUT:
                raise TimeoutError(f"{url} did not serve the app within {FIRST_200_TIMEOUT} s")
            time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    env = podman.podman_env(podman.cache_dir())
    podman.usable(env)
    podman.ensure_bases(env)
    build_s = {
        "preview": podman.build(podman.preview_recipe(), podman.PREVIEW_IMAGE, env),
        "orchestrator": podman.build(podman.orchestrator_recipe(), podman.ORCHESTRATOR_IMAGE, env),
    }
    sizes = {
        "preview": podman.image_size(podman.PREVIEW_IMAGE, env),
        "orchestrator": podman.image_size(podman.ORCHESTRATOR_IMAGE, env),
        "node_base": podman.image_size(podman.NODE_BASE, env),
        "python_base": podman.image_size(podman.PYTHON_BASE, env),
    }
    scratch = Path(tempfile.mkdtemp(prefix="vp-bench-images-"))
    try:
        runs = [run_once(podman.PREVIEW_IMAGE, env, scratch, i) for i in range(args.runs)]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    phases = {
        phase.removesuffix("_ms"): summary(
            [r["timings_ms"][phase] / 1000 for r in runs if r["timings_ms"].get(phase) is not None]
        )
        for phase in ("install_ms", "dev_server_ms", "ready_ms")
    }
    result = {
        "image_bytes": sizes,
        "image_mb": {k: round(v / 1e6, 1) for k, v in sizes.items()},
        "build_s_with_layer_cache": {k: round(v, 2) for k, v in build_s.items()},
        "run_to_first_200_s": summary([r["first_200_s"] for r in runs]),
        "agent_phases_s": phases,
        "machine": {"cpus": len(os.sched_getaffinity(0)), "python": platform.python_version()},
        "bases": "stand-ins from Debian bookworm packages (docs/deploy-fly.md, 'The images in the test suite')",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    first = result["run_to_first_200_s"]
    print(
        f"preview image {result['image_mb']['preview']} MB, orchestrator image {result['image_mb']['orchestrator']} MB; "
        f"podman run to the app's first 200 over {args.runs} runs: median {first['median']:.2f} s "
        f"(p90 {first['p90']:.2f} s)"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
