"""Catching up with the snapshot after a (re)join: nothing is replayed on a Realtime channel, so the
project's snapshot, which the editor saves every edit to, is what an agent that was away trusts.

``differences`` compares the snapshot with the workspace and returns the ``Change`` that makes the
workspace match it: the files whose bytes differ, and the deletions of files the agent knows belong
to the project (it had them from a snapshot or an edit) that the snapshot no longer has. Files the
project never had (build output, caches) are left alone.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from velocity.agent.changes import Change
from velocity.agent.workspace import Workspace
from velocity.domain.errors import BadRequest


def snapshot_files(data: bytes) -> dict[str, bytes]:
    """The regular files of a snapshot tarball by normalised path; members the workspace would refuse
    (absolute, ``..``, ``node_modules/``) are skipped, as the boot's extraction refuses them."""
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
            for member in archive:
                if not member.isfile():
                    continue
                try:
                    path = "/".join(Workspace.parts(member.name))
                except BadRequest:
                    continue
                handle = archive.extractfile(member)
                files[path] = handle.read() if handle is not None else b""
    except (tarfile.TarError, EOFError) as exc:
        raise BadRequest(f"the snapshot is not a readable tarball: {exc}") from exc
    return files


def differences(root: Path, files: Mapping[str, bytes], known: Iterable[str]) -> Change:
    """What makes the workspace at ``root`` match ``files``; ``known`` are the paths the project had."""
    writes = tuple((path, data) for path, data in sorted(files.items()) if _current(root, path) != data)
    deletes = tuple(sorted(path for path in set(known) - set(files) if _current(root, path) is not None))
    return Change(writes=writes, deletes=deletes)


def _current(root: Path, path: str) -> bytes | None:
    """The file's bytes, or None when it is missing or not a plain file on a path without links."""
    current = root
    for part in Workspace.parts(path):
        current = current / part
        try:
            info = os.lstat(current)
        except OSError:
            return None
        if stat.S_ISLNK(info.st_mode):
            return None
    if not stat.S_ISREG(info.st_mode):
        return None
    try:
        fd = os.open(current, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as file:
        return file.read()
