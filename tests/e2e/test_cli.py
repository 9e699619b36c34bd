"""The command line as a person uses it: `velocity up` until Ctrl-C, and the preview commands."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import EXAMPLE, Live, modules_cache
from velocity.providers.local import cgroups

pytestmark = pytest.mark.e2e
VELOCITY = str(Path(sys.executable).with_name("velocity"))


async def test_up_serves_the_example_and_ctrl_c_leaves_nothing_behind(npm_cache: Path) -> None:
    """`velocity up` prints a working preview URL and a token; Ctrl-C removes every sandbox."""
    data = Path(tempfile.mkdtemp(prefix="vp-"))
    env = {
        **os.environ,
        "VELOCITY_DATA_DIR": str(data),
        "LOCAL_NPM_CACHE_DIR": str(npm_cache),
        "LOCAL_MODULES_CACHE_DIR": str(modules_cache(npm_cache)),
        "COLUMNS": "400",
    }
    up = await asyncio.create_subprocess_exec(
        VELOCITY, "up", "--port", "0", env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert up.stdout is not None
    seen = []
    try:
        async with asyncio.timeout(120):
            while not (
                match := re.search(r"http://([a-z0-9]{12})\.preview\.localhost:(\d+)/", "".join(seen))
            ):
                line = (await up.stdout.readline()).decode()
                assert line, "velocity up ended early:\n" + "".join(seen)
                seen.append(line)
        output = "".join(seen)
        assert "API token" in output
        preview_id, port = match.group(1), match.group(2)
        token = re.search(r"API token\s+(\S+)", output)
        assert token is not None
        owner = {"authorization": f"Bearer {token.group(1)}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=owner) as client:
            page = await client.get(
                "/src/App.jsx", headers={"host": f"{preview_id}.preview.localhost:{port}"}
            )
        assert "Hello from Velocity" in page.text
        sandboxes = list((data / "sandboxes").iterdir())
        assert len(sandboxes) == 1
        up.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            rest = (await up.stdout.read()).decode()
            assert await up.wait() == 0, rest
        assert list((data / "sandboxes").iterdir()) == []
        version = cgroups.detect_version()
        if version is not None:
            group = cgroups.attach(sandboxes[0].name, version=version)
            assert all(not d.exists() for d in group.dirs.values())
        leftovers = [p for p in Path("/proc").glob("[0-9]*/cmdline") if str(data).encode() in _read(p)]
        assert leftovers == []
    finally:
        if up.returncode is None:
            up.kill()
            await up.wait()
        shutil.rmtree(data, ignore_errors=True)


def run(live: Live, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VELOCITY_TOKEN": live.token, "COLUMNS": "400"}
    url = f"http://127.0.0.1:{live.port}"
    return subprocess.run(
        [VELOCITY, *args, "--url", url], env=env, capture_output=True, text=True, timeout=120
    )


async def test_the_preview_commands_import_create_list_log_and_remove(live: Live) -> None:
    """projects import, previews create (with progress), ls, logs and rm against a live orchestrator."""
    imported = await asyncio.to_thread(run, live, "projects", "import", str(EXAMPLE), "--id", "demo")
    assert imported.returncode == 0, imported.stderr
    assert "imported demo" in imported.stdout
    created = await asyncio.to_thread(run, live, "previews", "create", "demo")
    assert created.returncode == 0, created.stderr
    preview_id, state, url = created.stdout.splitlines()[0].split()[-3:]
    assert state == "ready"
    assert url == f"http://{preview_id}.preview.localhost:{live.port}/"
    listed = await asyncio.to_thread(run, live, "previews", "ls")
    assert preview_id in listed.stdout
    logs = await asyncio.to_thread(run, live, "previews", "logs", preview_id, "--tail", "50")
    assert logs.returncode == 0
    assert "VITE" in logs.stdout or "ready in" in logs.stdout
    removed = await asyncio.to_thread(run, live, "previews", "rm", preview_id)
    assert removed.stdout.split() == [preview_id, "stopped"]
    missing = await asyncio.to_thread(run, live, "previews", "create", "no-such-project")
    assert missing.returncode == 1
    assert "project no-such-project not found" in missing.stderr


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # the process ended while we looked
        return b""
