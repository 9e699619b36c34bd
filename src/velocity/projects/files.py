"""Snapshots on disk, one tarball per project under the data directory."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

from velocity.domain import NotFound


class ProjectFiles:
    def __init__(self, root: Path) -> None:
        self._root = root
        # Users' code: readable by the orchestrator only.
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        root.chmod(0o700)

    def path(self, project_id: str) -> Path:
        return self._root / project_id / "snapshot.tar.gz"

    def save(self, project_id: str, data: bytes) -> None:
        target = self.path(project_id)
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            out.write(data)
        os.replace(partial, target)  # readers see the old snapshot or the new one, never half of one
        key = dependencies_key(data)
        key_file = target.with_name("dependencies.key")
        if key is None:
            key_file.unlink(missing_ok=True)
        else:
            key_file.write_text(key)

    def dependencies_key(self, project_id: str) -> str | None:
        """A digest of the project's package.json and lockfile, or ``None`` without a lockfile."""
        try:
            return self.path(project_id).with_name("dependencies.key").read_text().strip() or None
        except FileNotFoundError:
            return None

    def read(self, project_id: str) -> bytes:
        try:
            return self.path(project_id).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"project {project_id} has no snapshot") from None


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
