"""What a snapshot says of the project's dependencies, and the snapshot files of earlier versions."""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterator
from pathlib import Path


def legacy_snapshots(root: Path) -> Iterator[tuple[str, Path]]:
    """Snapshots an earlier version kept as files (``root/<project>/snapshot.tar.gz``), now kept in
    the database: each project id and its file, for the orchestrator to move in once."""
    if not root.is_dir():
        return
    for path in sorted(root.glob("*/snapshot.tar.gz")):
        yield path.parent.name, path


def dependencies_key(snapshot: bytes) -> str | None:
    """What decides ``node_modules``: package.json and the lockfile, hashed together."""
    wanted = {"package.json": b"", "package-lock.json": b""}
    with tarfile.open(fileobj=io.BytesIO(snapshot), mode="r:*") as archive:
        for member in archive:
            if member.name in wanted and member.isfile():
                handle = archive.extractfile(member)
                wanted[member.name] = handle.read() if handle else b""
    if not wanted["package-lock.json"]:
        return None
    digest = hashlib.sha256()
    for name in sorted(wanted):
        digest.update(name.encode() + b"\0" + wanted[name] + b"\0")
    return digest.hexdigest()
