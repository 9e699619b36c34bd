"""Installed ``node_modules`` kept between sandboxes, per owner and lockfile.

A sandbox that ends after a complete install leaves its ``node_modules`` here, and the next machine
with the same key starts from it (a few milliseconds, against a second of ``npm ci``). Where
workspaces are disks of their own (``disks``), the cache keeps the whole disk, emptied of everything
but ``node_modules``, and the next machine takes it over: a rename each way. Where they are plain
directories, it keeps the ``node_modules`` directory (moved, not copied) and hard-links it into the
next (``cp -al``). Keys include the owner (``MachineSpec.cache_key``): a sandbox can write to its
``node_modules``, so nothing one user's code touched is ever given to another user.

Nor is what a preview's code changed after its install given to the owner's next preview: the agent
seals each install it finishes (``install_seal``) into the machine's seal file, and a tree is kept
only if it still matches that seal when the machine is gone. The seal is kept beside the tree, in
this directory (no sandbox sees it), and handed to the machine that takes the tree over.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import subprocess
from pathlib import Path

from velocity.domain.install_seal import SCRATCH, seal
from velocity.domain.package_managers import INSTALLED_MARKER

# A complete install leaves one of these in node_modules: npm's own record, written last, or the
# agent's record of any manager's finished install.
COMPLETE_MARKERS = (".package-lock.json", INSTALLED_MARKER)

log = logging.getLogger(__name__)


class ModulesCache:
    def __init__(self, root: Path | None, *, entries: int) -> None:
        self._root = root
        self._entries = entries
        if root is not None:
            # What sandboxes wrote (setuid files included) is reachable by no other host user.
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
            root.chmod(0o700)

    def link(self, key: str, workspace: Path, seal_file: Path) -> bool:
        """Hard-link the kept ``node_modules`` of ``key`` into ``workspace`` and its seal to
        ``seal_file``; False when there is none. Links share their files with the cache, so the tree
        is sealed again first: one a sandbox changed in place since is dropped."""
        if self._root is None or not (self._root / key / "node_modules").is_dir():
            return False
        kept = self._root / key
        if not _sealed(kept / "node_modules", kept / "seal"):
            _remove(kept)
            return False
        shutil.copyfile(kept / "seal", seal_file)
        linked = subprocess.run(
            ["cp", "-al", str(kept / "node_modules"), str(workspace / "node_modules")],
            capture_output=True,
            check=False,
        )
        if linked.returncode != 0:  # another filesystem, say: the agent installs as usual
            log.info("could not link kept dependencies: %s", linked.stderr.decode(errors="replace")[-200:])
            shutil.rmtree(workspace / "node_modules", ignore_errors=True)
            return False
        os.utime(kept)  # most recently used, for eviction
        return True

    def claim(self, key: str, image: Path, seal_file: Path) -> bool:
        """Move the kept disk of ``key`` to ``image`` and its seal to ``seal_file`` (one machine gets
        them); False when there is none."""
        if self._root is None:
            return False
        try:
            os.rename(self._root / f"{key}.seal", seal_file)
        except FileNotFoundError:
            return False
        try:
            os.rename(self._root / f"{key}.img", image)
        except FileNotFoundError:
            seal_file.unlink(missing_ok=True)
            return False
        os.utime(image)
        return True

    def ready_to_keep(self, workspace: Path, seal_file: Path) -> bool:
        """Whether the disk mounted at ``workspace`` holds a complete install, unchanged since the
        agent sealed it; if so, everything else on it (the project's files, tool caches) is removed,
        without following any link."""
        modules = workspace / "node_modules"
        if not self._keepable(modules, seal_file):
            return False
        for entry in workspace.iterdir():
            if entry.name != "node_modules":
                _remove(entry)
        for scratch in SCRATCH:
            _remove(modules / scratch)
        return True

    def keep_image(self, key: str, image: Path, seal_file: Path) -> bool:
        """Keep the (unmounted) disk ``image`` and its seal under ``key``, unless the key has one
        already."""
        assert self._root is not None
        kept = self._root / f"{key}.img"
        if kept.exists():
            os.utime(kept)
            return False
        shutil.copyfile(seal_file, self._root / f"{key}.seal")
        os.rename(image, kept)
        self._evict()
        return True

    def keep(self, key: str, workspace: Path, seal_file: Path) -> bool:
        """Move a finished install's ``node_modules`` into the cache; False when it is not kept.

        Only a complete install counts (npm writes ``node_modules/.package-lock.json`` last). The tree
        was written by the sandbox, so nothing here follows a link it may have planted: a
        ``node_modules`` that is a link, or whose marker is one, is not kept, and scratch entries that
        are links are removed as links.
        """
        modules = workspace / "node_modules"
        if not self._keepable(modules, seal_file):
            return False
        assert self._root is not None
        if (self._root / key).exists():
            os.utime(self._root / key)
            return False
        staging = self._root / f".{key}.{os.getpid()}.{id(workspace)}"
        try:
            staging.mkdir(parents=True)
            os.rename(modules, staging / "node_modules")
            for scratch in SCRATCH:
                _remove(staging / "node_modules" / scratch)
            shutil.copyfile(seal_file, staging / "seal")
            os.rename(staging, self._root / key)
        except OSError as exc:  # a concurrent keeper won, or another filesystem
            log.info("not keeping dependencies under %s: %s", key, exc)
            shutil.rmtree(staging, ignore_errors=True)
            return False
        self._evict()
        return True

    def _keepable(self, modules: Path, seal_file: Path) -> bool:
        """A complete install (npm writes ``.package-lock.json`` last; the agent records every
        manager's finished install in ``.velocity-installed.json``), not a link, unchanged since the
        agent sealed it."""
        if self._root is None or not _real_dir(modules):
            return False
        if not any(_real_file(modules / marker) for marker in COMPLETE_MARKERS):
            return False
        return _sealed(modules, seal_file)

    def _evict(self) -> None:
        assert self._root is not None
        kept = sorted(
            (p for p in self._root.iterdir() if not p.name.startswith(".") and p.suffix != ".seal"),
            key=lambda p: p.stat().st_mtime,
        )
        for stale in kept[: max(0, len(kept) - self._entries)]:
            _remove(stale)
            _remove(stale.with_suffix(".seal"))


def _sealed(modules: Path, seal_file: Path) -> bool:
    """Whether ``modules`` is as the agent sealed it after its last install."""
    try:
        reported = seal_file.read_text().strip()
    except OSError:
        reported = ""
    if not reported:
        log.info("not keeping %s: no install of the machine was sealed", modules)
        return False
    if seal(modules) != reported:
        log.warning("not keeping %s: it changed after its install was sealed", modules)
        return False
    return True


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
