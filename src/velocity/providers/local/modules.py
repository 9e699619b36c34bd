"""Installed ``node_modules`` kept between sandboxes, per owner and lockfile.

A sandbox that ends after a complete install leaves its ``node_modules`` here, and the next machine
with the same key starts from it (a few milliseconds, against a second of ``npm ci``). Where
workspaces are disks of their own (``disks``), the cache keeps the whole disk, emptied of everything
but ``node_modules``, and the next machine takes it over: a rename each way. Where they are plain
directories, it keeps the ``node_modules`` directory (moved, not copied) and hard-links it into the
next (``cp -al``). Keys include the owner (``MachineSpec.cache_key``): a sandbox can write to its
``node_modules``, so nothing one user's code touched is ever given to another user.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)

# Vite's and tools' caches are rebuilt per preview; only the installed packages are worth keeping.
SCRATCH = (".vite", ".vite-temp", ".cache")


class ModulesCache:
    def __init__(self, root: Path | None, *, entries: int) -> None:
        self._root = root
        self._entries = entries
        if root is not None:
            # What sandboxes wrote (setuid files included) is reachable by no other host user.
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
            root.chmod(0o700)

    def link(self, key: str, workspace: Path) -> bool:
        """Hard-link the kept ``node_modules`` of ``key`` into ``workspace``; False when there is none."""
        if self._root is None or not (self._root / key / "node_modules").is_dir():
            return False
        linked = subprocess.run(
            ["cp", "-al", str(self._root / key / "node_modules"), str(workspace / "node_modules")],
            capture_output=True,
            check=False,
        )
        if linked.returncode != 0:  # another filesystem, say: the agent installs as usual
            log.info("could not link kept dependencies: %s", linked.stderr.decode(errors="replace")[-200:])
            shutil.rmtree(workspace / "node_modules", ignore_errors=True)
            return False
        os.utime(self._root / key)  # most recently used, for eviction
        return True

    def claim(self, key: str, image: Path) -> bool:
        """Move the kept disk of ``key`` to ``image`` (one machine gets it); False when there is none."""
        if self._root is None:
            return False
        try:
            os.rename(self._root / f"{key}.img", image)
        except FileNotFoundError:
            return False
        os.utime(image)
        return True

    def ready_to_keep(self, workspace: Path) -> bool:
        """Whether the disk mounted at ``workspace`` holds a complete install; if so, everything else
        on it (the project's files, tool caches) is removed, without following any link."""
        modules = workspace / "node_modules"
        if self._root is None or not _real_dir(modules) or not _real_file(modules / ".package-lock.json"):
            return False
        for entry in workspace.iterdir():
            if entry.name != "node_modules":
                _remove(entry)
        for scratch in SCRATCH:
            _remove(modules / scratch)
        return True

    def keep_image(self, key: str, image: Path) -> bool:
        """Keep the (unmounted) disk ``image`` under ``key``, unless the key has one already."""
        assert self._root is not None
        kept = self._root / f"{key}.img"
        if kept.exists():
            os.utime(kept)
            return False
        os.rename(image, kept)
        self._evict()
        return True

    def keep(self, key: str, workspace: Path) -> bool:
        """Move a finished install's ``node_modules`` into the cache; False when it is not kept.

        Only a complete install counts (npm writes ``node_modules/.package-lock.json`` last). The tree
        was written by the sandbox, so nothing here follows a link it may have planted: a
        ``node_modules`` that is a link, or whose marker is one, is not kept, and scratch entries that
        are links are removed as links.
        """
        modules = workspace / "node_modules"
        if self._root is None or not _real_dir(modules) or not _real_file(modules / ".package-lock.json"):
            return False
        if (self._root / key).exists():
            os.utime(self._root / key)
            return False
        staging = self._root / f".{key}.{os.getpid()}.{id(workspace)}"
        try:
            staging.mkdir(parents=True)
            os.rename(modules, staging / "node_modules")
            for scratch in SCRATCH:
                _remove(staging / "node_modules" / scratch)
            os.rename(staging, self._root / key)
        except OSError as exc:  # a concurrent keeper won, or another filesystem
            log.info("not keeping dependencies under %s: %s", key, exc)
            shutil.rmtree(staging, ignore_errors=True)
            return False
        self._evict()
        return True

    def _evict(self) -> None:
        assert self._root is not None
        kept = sorted(
            (p for p in self._root.iterdir() if not p.name.startswith(".")), key=lambda p: p.stat().st_mtime
        )
        for stale in kept[: max(0, len(kept) - self._entries)]:
            _remove(stale)


def _real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _real_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _remove(path: Path) -> None:
    """Remove ``path`` without following it: a link goes as a link, a directory with ``rmtree``
    (which never follows the links inside)."""
    if _real_dir(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
