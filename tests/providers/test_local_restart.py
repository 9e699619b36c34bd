"""What a local provider finds at start from an orchestrator killed mid-create."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from velocity.providers.local import cgroups
from velocity.providers.local.provider import LocalSandboxProvider, SandboxOptions


async def test_a_sandbox_whose_start_was_cut_short_is_removed_with_what_it_runs() -> None:
    """An orchestrator killed between starting a sandbox and writing its ``machine.json`` leaves a
    directory no preview knows, maybe with processes in its cgroup: the next provider kills them
    and removes the directory, cgroup and all; sandboxes it knows are left alone."""
    root = Path(tempfile.mkdtemp(prefix="vp-")) / "sandboxes"
    cut_short = root / "vm0000cutshort"
    (cut_short / "workspace").mkdir(parents=True)
    (cut_short / "console.log").write_text("half made\n")
    version = cgroups.detect_version()
    sleeper = None
    if version is not None:
        group = cgroups.create(
            cut_short.name, cgroups.Limits(memory_bytes=64 << 20, cpus=1.0, pids=16), version=version
        )
        sleeper = subprocess.Popen(["sleep", "600"])  # noqa: ASYNC220 - a fork+exec, milliseconds
        for procs in group.procs_files:
            procs.write_text(str(sleeper.pid))
    provider = LocalSandboxProvider(SandboxOptions(root=root, npm_cache=root.parent / "npm"))
    try:
        assert not cut_short.exists()
        assert await provider.list() == []
        if sleeper is not None and version is not None:
            assert sleeper.wait(timeout=5) == -9, "what ran in its cgroup was killed"
            group = cgroups.attach(cut_short.name, version=version)
            assert all(not d.exists() for d in group.dirs.values())
    finally:
        if sleeper is not None and sleeper.poll() is None:
            sleeper.kill()
        await provider.aclose()
        shutil.rmtree(root.parent, ignore_errors=True)
