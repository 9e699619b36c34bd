"""What a snapshot says of the project's dependencies, and the snapshot files of earlier versions."""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

from velocity.domain.package_managers import DEPENDENCY_FILES, LOCKFILES


def legacy_snapshots(root: Path) -> Iterator[tuple[str, Path]]:
    """Snapshots an earlier version kept as files (``root/<project>/snapshot.tar.gz``), now kept in
    the database: each project id and its file, for the orchestrator to move in once."""
    if not root.is_dir():
        return
    for path in sorted(root.glob("*/snapshot.tar.gz")):
        yield path.parent.name, path


def dependencies_key(snapshot: bytes) -> str | None:
    """What decides ``node_modules``: package.json and the lockfile of the project's package manager
    (the first of ``LOCKFILES`` it has, as the agent picks it), hashed together; None without one."""
    found: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(snapshot), mode="r:*") as archive:
        for member in archive:
            if member.name in DEPENDENCY_FILES and member.isfile():
                handle = archive.extractfile(member)
                found[member.name] = handle.read() if handle else b""
    lockfile = next((name for name in LOCKFILES if found.get(name)), None)
    if lockfile is None:
        return None
    digest = hashlib.sha256()
    for name in sorted({"package.json", lockfile}):
        digest.update(name.encode() + b"\0" + found.get(name, b"") + b"\0")
    return digest.hexdigest()
