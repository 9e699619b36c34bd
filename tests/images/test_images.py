"""The two images, built and run for real: podman builds them exactly as the workflows do, on
stand-ins for the official bases made from Debian's packages (tests/images/podman.py; what the
stand-ins do and do not prove: docs/deploy-fly.md, "The images in the test suite").

Run by ``make test`` wherever podman can run containers (scripts/setup installs podman, buildah,
runc and mmdebstrap); elsewhere the module is skipped with the reason.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import pytest_asyncio
import websockets

from tests.deploy.deploy_files import workflow
from tests.e2e.fly_client import Client, mint_token
from tests.e2e.harness import EXAMPLE
from tests.images import podman
from velocity.flynet import fabric as flynet_fabric
from velocity.flynet.topology import Images, Topology, topology

ENV = podman.podman_env(podman.cache_dir())


def _unusable() -> str | None:
    try:
        podman.usable(ENV)
    except podman.PodmanUnavailable as exc:
        return str(exc)
    return flynet_fabric.available()


pytestmark = [
    pytest.mark.images,
    pytest.mark.skipif((reason := _unusable()) is not None, reason=f"podman cannot run here: {reason}"),
]

ROOT = podman.ROOT


@dataclass(frozen=True, slots=True)
class Built:
    preview: str
    orchestrator: str


@pytest.fixture(scope="module")
def built() -> Iterator[Built]:
    """Both images, built once for the module (podman's layer cache makes a rebuild of unchanged
    inputs quick, as the workflows' cache does)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONTAINERS_CONF", ENV["CONTAINERS_CONF"])  # for the topology's processes too
        podman.ensure_bases(ENV)
        podman.build(podman.preview_recipe(), podman.PREVIEW_IMAGE, ENV)
        podman.build(podman.orchestrator_recipe(), podman.ORCHESTRATOR_IMAGE, ENV)
        yield Built(podman.PREVIEW_IMAGE, podman.ORCHESTRATOR_IMAGE)


def in_image(image: str, *command: str) -> str:
    return podman.run(["podman", "run", "--rm", image, *command], ENV).stdout.strip()


def test_the_workflows_build_both_images_from_the_repository_root() -> None:
    """What the tests build is read from the workflow and fly.toml, not restated here."""
    assert podman.preview_recipe() == podman.Recipe("preview-container/Dockerfile", ".")
    assert podman.preview_recipe().ignorefile == "preview-container/Dockerfile.dockerignore"
    assert podman.orchestrator_recipe() == podman.Recipe("Dockerfile", ".")
    assert podman.orchestrator_recipe().ignorefile == ".dockerignore"


def test_the_preview_image_holds_node_npm_and_the_agent(built: Built) -> None:
    """The first checks of the workflow's validation step, and the agent on its own Python."""
    assert in_image(built.preview, "node", "--version").startswith("v20.")
    assert re.fullmatch(r"\d+\.\d+\.\d+", in_image(built.preview, "npm", "--version"))
    assert re.fullmatch(r"\d+\.\d+\.\d+", in_image(built.preview, "corepack", "--version"))  # pnpm, yarn
    found = in_image(
        built.preview, "python", "-c", "import sys, velocity.agent as a; print(sys.prefix, a.__file__)"
    )
    assert found == "/opt/velocity /opt/velocity/src/velocity/agent/__init__.py"


def test_the_agent_s_source_is_the_image_s_last_small_layer_over_its_own_dependencies(built: Built) -> None:
    """A source edit ships one layer of about a megabyte; the agent's virtualenv holds none of the
    orchestrator's dependencies."""
    history = podman.run(["podman", "history", "--format", "{{.Size}}\t{{.CreatedBy}}", built.preview], ENV)
    layers = [line.split("\t", 1) for line in history.stdout.splitlines()]
    sized = [(size, step) for size, step in layers if size != "0 B"]
    size, step = sized[0]  # newest first
    assert "COPY dir:" in step and size.endswith(("kB", "MB")), sized[:3]
    assert size.endswith("kB") or float(size.split()[0]) < 5, f"the source layer is {size}"
    found = in_image(
        built.preview,
        "python", "-c",
        "import importlib.util as u; print([m for m in ('fastapi', 'sqlalchemy', 'alembic', 'asyncpg', 'typer')"
        " if u.find_spec(m)])",
    )  # fmt: skip
    assert found == "[]"


def test_the_orchestrator_image_without_fly_toml_s_env_names_what_is_missing(built: Built) -> None:
    """``podman run`` of the image alone: one line naming the first missing setting, status 2."""
    started = subprocess.run(
        ["podman", "run", "--rm", built.orchestrator], env=ENV, capture_output=True, text=True, timeout=120
    )
    assert started.returncode == 2, started.stderr
    assert "Traceback" not in started.stdout + started.stderr
    assert (
        started.stderr.strip().splitlines()[-1]
        == "velocity: FLY_API_TOKEN is not set; see docs/fly.md#tokens"
    )


def test_the_preview_image_run_as_the_guide_s_step_4_says_why_there_is_no_project(built: Built) -> None:
    """``docker run --rm -p 8080:8080 -e SUPABASE_URL -e SUPABASE_ANON_KEY -e PROJECT_ID`` and
    nothing else: /health answers why nothing runs, and SIGTERM ends it at once with status 0."""
    name = f"vp-step4-{os.getpid()}"
    podman.run(
        [
            "podman", "run", "--detach", "--name", name, "--publish", "127.0.0.1::8080",
            "--env", "SUPABASE_URL=https://example.supabase.co", "--env", "SUPABASE_ANON_KEY=anon",
            "--env", "PROJECT_ID=test", built.preview,
        ],
        ENV,
    )  # fmt: skip
    try:
        port = podman.run(["podman", "port", name, "8080"], ENV).stdout.strip().rsplit(":", 1)[1]
        health = answered(f"http://127.0.0.1:{port}/health", within=30)
        assert health.status_code == 503
        body = health.json()
        assert body["project_id"] == "test" and body["state"] == "failed"
        assert "no project to preview: SNAPSHOT_URL is not set" in body["detail"]
        assert "without CAP_NET_ADMIN" in body["detail"], "and why the policy is not applied"
        began = time.monotonic()
        podman.run(["podman", "stop", "--time", "10", name], ENV)
        stopped_in = time.monotonic() - began
        state = json.loads(podman.run(["podman", "inspect", "--format", "{{json .State}}", name], ENV).stdout)
        logs = podman.run(["podman", "logs", name], ENV)
    finally:
        subprocess.run(["podman", "rm", "--force", name], env=ENV, capture_output=True, check=False)
    assert state["ExitCode"] == 0, logs.stderr
    assert stopped_in < 5, f"SIGTERM took {stopped_in:.1f} s: past Fly's kill_timeout"
    assert "Traceback" not in logs.stdout + logs.stderr


def answered(url: str, *, within: float) -> httpx.Response:
    """The first answer of a server that is starting (connections refused or reset until it listens)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return httpx.get(url, timeout=5)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def test_the_workflow_s_validation_step_passes_on_the_image_it_built(built: Built, tmp_path: Path) -> None:
    """The step's own script, with podman standing in for docker: the image serves the example
    (npm install from the warmed cache, then Vite) and the agent runs as its own uid."""
    (step,) = [
        s for s in workflow("build-preview-container.yml")["jobs"]["build"]["steps"]
        if s.get("name", "").startswith("Validate")
    ]  # fmt: skip
    shims = tmp_path / "bin"
    shims.mkdir()
    (shims / "docker").write_text('#!/bin/sh\nexec podman "$@"\n')
    (shims / "docker").chmod(0o755)
    env = ENV | {
        "PATH": f"{shims}:{ENV['PATH']}",
        "RUNNER_TEMP": str(tmp_path),
        "IMAGE_REF": built.preview,
        **{k: str(v) for k, v in step["env"].items() if k != "IMAGE_REF"},
    }
    done = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", step["run"]],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fly(built: Built, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Topology]:
    """Fly's network on this machine with both images in it: the orchestrator's image on its
    machine with fly.toml's [env], each preview machine the preview image."""
    data = tmp_path_factory.mktemp("fly-images")
    images = Images(preview=built.preview, orchestrator=built.orchestrator)
    async with topology(root=ROOT, data=data, npm_cache=data / "npm", images=images) as running:
        yield running


@pytest.mark.asyncio(loop_scope="module")
async def test_on_fly_s_network_the_images_serve_the_example_with_hot_reload(fly: Topology) -> None:
    """The orchestrator's image answers /healthz through the edge; a preview is a machine of the
    preview image, its agent fetches the project from the orchestrator over the private network,
    serves it on 8080 and pushes an edit over HMR; deleting it removes the container."""
    owner = Client(fly, mint_token(fly, "image-user"))
    try:
        health = await owner.api.get("/healthz")
        assert health.status_code == 200, health.text
        assert health.json()["status"] == "ok" and health.json()["provider"] == "fly", health.text
        preview = await owner.started(EXAMPLE, "example")
        session = await owner.sign_in(preview)
        page = await owner.get(preview, "/", cookie=session)
        assert page.status_code == 200 and '<div id="root"></div>' in page.text, page.text
        assert (
            podman.run(
                [
                    "podman",
                    "ps",
                    "--filter",
                    f"label=velocity.flynet={fly.fabric.name}",
                    "--format",
                    "{{.Image}}",
                ],
                ENV,
            )
            .stdout.split()
            .count(podman.PREVIEW_IMAGE)
            == 1
        )

        client = (await owner.get(preview, "/@vite/client", cookie=session)).text
        token = re.search(r'const wsToken = "([^"]*)"', client)
        assert token is not None
        edge = urlsplit(fly.edge_url)
        async with websockets.connect(
            f"ws://{urlsplit(preview['url']).netloc}/?token={token.group(1)}",
            sock=socket.create_connection((edge.hostname, edge.port)),
            additional_headers={"cookie": session},
            subprotocols=["vite-hmr"],  # type: ignore[list-item]
            open_timeout=30,
        ) as hmr:
            assert json.loads(await hmr.recv())["type"] == "connected"
            edited = (
                (EXAMPLE / "src" / "App.jsx")
                .read_text()
                .replace("Hello from Velocity", "Edited in the image")
            )
            await owner.broadcast("example", {"src/App.jsx": edited.encode()})
            async with asyncio.timeout(30):
                while (message := json.loads(await hmr.recv()))["type"] != "update":
                    pass
            assert any(u["path"] == "/src/App.jsx" for u in message["updates"]), message
        app = await owner.get(preview, "/src/App.jsx", cookie=session)
        assert "Edited in the image" in app.text

        deleted = await owner.api.delete(f"/v1/previews/{preview['id']}")
        assert deleted.status_code == 200, deleted.text
        assert await owner.machine_gone(preview["machine_id"])
        left = podman.run(
            [
                "podman",
                "ps",
                "--all",
                "--filter",
                f"label=velocity.flynet={fly.fabric.name}",
                "--format",
                "{{.Image}}",
            ],
            ENV,
        )
        assert podman.PREVIEW_IMAGE not in left.stdout.split()
    finally:
        await owner.aclose()
