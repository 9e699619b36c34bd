"""Snapshots on disk, one tarball per project under the data directory."""

from __future__ import annotations

import os
from pathlib import Path

from velocity.domain import NotFound


class ProjectFiles:
    def __init__(self, root: Path) -> None:
        self._root = root

    def path(self, project_id: str) -> Path:
        return self._root / project_id / "snapshot.tar.gz"

    def save(self, project_id: str, data: bytes) -> None:
        target = self.path(project_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        partial.write_bytes(data)
        os.replace(partial, target)  # readers see the old snapshot or the new one, never half of one

    def read(self, project_id: str) -> bytes:
        try:
            return self.path(project_id).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"project {project_id} has no snapshot") from None
