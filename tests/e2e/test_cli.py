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
from tests.realtime.realtime_clients import eventually
from velocity.providers.local import cgroups

pytestmark = pytest.mark.e2e
VELOCITY = str(Path(sys.executable).with_name("velocity"))


async def test_up_serves_the_example_follows_its_edits_and_ctrl_c_leaves_nothing_behind(
    npm_cache: Path, tmp_path: Path
) -> None:
    """`velocity up` prints a working preview URL and a token, each whole on one line in an
    80-column terminal, without a line per egress connection or migration; an edit saved in the
    project directory reaches the preview, as under `vite dev`; Ctrl-C removes every sandbox."""
    data = Path(tempfile.mkdtemp(prefix="vp-"))
    project = tmp_path / "example"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("node_modules", "dist"))
    env = {
        **os.environ,
        "LOCAL_NPM_CACHE_DIR": str(npm_cache),
        "LOCAL_MODULES_CACHE_DIR": str(modules_cache(npm_cache)),
        "COLUMNS": "80",
    }
    up = await asyncio.create_subprocess_exec(
        VELOCITY, "up", "--port", "0", "--data-dir", str(data), "--project", str(project),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    assert up.stdout is not None
    seen: list[str] = []

    async def until(pattern: str) -> re.Match[str]:
        assert up.stdout is not None
        while not (found := re.search(pattern, "".join(seen))):
            line = (await up.stdout.readline()).decode()
            assert line, "velocity up ended early:\n" + "".join(seen)
            seen.append(line)
        return found

    try:
        async with asyncio.timeout(120):
            match = await until(r"http://([a-z0-9]{12})\.preview\.localhost:(\d+)/")
            await until(r"watching .*example")
        output = "".join(seen)
        preview_id, port = match.group(1), match.group(2)
        token = re.search(r"API token\s+(\S+)\n", output)
        assert token is not None and token.group(1).count(".") == 2, output
        assert "egress" not in output and "alembic" not in output, output
        owner = {"authorization": f"Bearer {token.group(1)}"}
        host = {"host": f"{preview_id}.preview.localhost:{port}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=owner) as client:
            page = await client.get("/src/App.jsx", headers=host)
            assert "Hello from Velocity" in page.text
            app = project / "src" / "App.jsx"
            app.write_text(app.read_text().replace("Hello from Velocity", "Edited beside up"))
            async with asyncio.timeout(30):
                await until(r"pushed 1 changed and 0 deleted: src/App.jsx")
            workspace = next((data / "sandboxes").iterdir()) / "workspace" / "src" / "App.jsx"
            await eventually(lambda: "Edited beside up" in workspace.read_text(), within=15)
            assert "Edited beside up" in (await client.get("/src/App.jsx", headers=host)).text
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


def run(live: Live, *args: str, columns: int = 400) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VELOCITY_TOKEN": live.token, "COLUMNS": str(columns)}
    url = f"http://127.0.0.1:{live.port}"
    return subprocess.run(
        [VELOCITY, *args, "--url", url], env=env, capture_output=True, text=True, timeout=120
    )


async def test_the_preview_commands_import_create_list_log_and_remove(live: Live) -> None:
    """projects import, previews create (with progress), ls (the URL whole in 80 columns), logs
    (of a removed preview too) and rm against a live orchestrator."""
    imported = await asyncio.to_thread(run, live, "projects", "import", str(EXAMPLE), "--id", "demo")
    assert imported.returncode == 0, imported.stderr
    assert "imported demo" in imported.stdout
    created = await asyncio.to_thread(run, live, "previews", "create", "demo")
    assert created.returncode == 0, created.stderr
    preview_id, state, url = created.stdout.splitlines()[0].split()[-3:]
    assert state == "ready"
    assert url == f"http://{preview_id}.preview.localhost:{live.port}/"
    listed = await asyncio.to_thread(run, live, "previews", "ls", columns=80)
    assert preview_id in listed.stdout
    assert url in listed.stdout, listed.stdout
    logs = await asyncio.to_thread(run, live, "previews", "logs", preview_id, "--tail", "50")
    assert logs.returncode == 0
    assert "VITE" in logs.stdout or "ready in" in logs.stdout
    removed = await asyncio.to_thread(run, live, "previews", "rm", preview_id)
    assert removed.stdout.split() == [preview_id, "stopped"]
    ended = await asyncio.to_thread(run, live, "previews", "logs", preview_id, "--tail", "50")
    assert ended.returncode == 0
    assert "VITE" in ended.stdout or "ready in" in ended.stdout, "a stopped preview keeps its last lines"
    missing = await asyncio.to_thread(run, live, "previews", "create", "no-such-project")
    assert missing.returncode == 1
    assert "project no-such-project not found" in missing.stderr


async def test_watch_shows_the_previews_and_logs_follow_until_the_preview_ends(live: Live) -> None:
    """``previews watch`` draws the table (the URL whole in 80 columns); ``previews logs -f`` prints
    the tail, then follows, and returns once the preview has stopped."""
    await live.import_project(EXAMPLE, "watched")
    ready = await live.settled((await live.create("watched"))["id"])
    watched = await asyncio.to_thread(run, live, "previews", "watch", "--times", "1", columns=80)
    assert watched.returncode == 0, watched.stderr
    assert ready["id"] in watched.stdout and ready["url"] in watched.stdout, watched.stdout
    env = {**os.environ, "VELOCITY_TOKEN": live.token}
    following = await asyncio.create_subprocess_exec(
        VELOCITY, "previews", "logs", ready["id"], "-f", "--url", f"http://127.0.0.1:{live.port}",
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert following.stdout is not None
        async with asyncio.timeout(30):
            while b"ready in" not in await following.stdout.readline():
                pass
        removed = await live.api.delete(f"/v1/previews/{ready['id']}")
        assert removed.status_code == 200
        async with asyncio.timeout(30):
            _, err = await following.communicate()
    finally:
        if following.returncode is None:
            following.kill()
            await following.wait()
    assert following.returncode == 0
    assert "the preview stopped" in err.decode()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # the process ended while we looked
        return b""
