"""Project snapshots: packing a directory, checking an uploaded archive, digesting its dependencies.

The orchestrator keeps snapshots in its database; agents fetch them as gzip tarballs.
"""

from velocity.projects.archive import (
    EXCLUDED_DIRS,
    Snapshot,
    archive_files,
    directory_files,
    pack_directory,
    read_snapshot,
)
from velocity.projects.files import dependencies_key, legacy_snapshots

__all__ = [
    "EXCLUDED_DIRS",
    "Snapshot",
    "archive_files",
    "dependencies_key",
    "directory_files",
    "legacy_snapshots",
    "pack_directory",
    "read_snapshot",
]
