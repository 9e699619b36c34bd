"""Project snapshots: packing a directory, checking an uploaded archive, keeping it on disk.

Locally the orchestrator is the source of snapshots; agents fetch them as gzip tarballs.
"""

from velocity.projects.archive import (
    EXCLUDED_DIRS,
    Snapshot,
    archive_files,
    directory_files,
    pack_directory,
    read_snapshot,
)
from velocity.projects.files import ProjectFiles

__all__ = [
    "EXCLUDED_DIRS",
    "ProjectFiles",
    "Snapshot",
    "archive_files",
    "directory_files",
    "pack_directory",
    "read_snapshot",
]
