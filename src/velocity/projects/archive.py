"""Snapshots as gzip tarballs of regular files with safe relative paths."""

from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from velocity.domain import BadRequest

# Never part of a snapshot: installed dependencies, VCS data, build output and caches.
EXCLUDED_DIRS = frozenset({"node_modules", ".git", "dist", "build", ".vite", ".next", ".cache", ".turbo"})
# Reading an uploaded tarball costs time per entry and per byte, whatever is kept: a 450 KB gzip of
# 200 000 empty entries took 13 s. Entries (directories and skipped ones included) and their bytes
# are bounded before they are read.
MAX_ARCHIVE_ENTRIES = 20_000
MAX_ARCHIVE_SCAN_FACTOR = 4  # bytes of all entries, as a multiple of MAX_PROJECT_BYTES


@dataclass(frozen=True, slots=True)
class Snapshot:
    data: bytes  # the normalised tarball
    file_count: int
    size_bytes: int  # sum of file sizes, uncompressed


def pack_directory(root: Path, *, max_bytes: int) -> Snapshot:
    """Pack ``root`` (files only, excluded directories and symlinks skipped) into a snapshot."""
    return _tarball(directory_files(root, max_bytes=max_bytes))


def directory_files(root: Path, *, max_bytes: int) -> list[tuple[str, bytes]]:
    """What ``pack_directory`` packs: (relative POSIX path, bytes) of each file, in a stable order."""
    if not root.is_dir():
        raise BadRequest(f"{root} is not a directory")
    files: list[tuple[str, bytes]] = []
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in EXCLUDED_DIRS)
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file():
                continue
            data = path.read_bytes()
            total += len(data)
            if total > max_bytes:
                raise BadRequest(f"project is larger than MAX_PROJECT_BYTES={max_bytes}")
            files.append((path.relative_to(root).as_posix(), data))
    return files


def read_snapshot(data: bytes, *, max_bytes: int) -> Snapshot:
    """Check an uploaded tarball and re-pack it: only regular files under safe relative paths."""
    return _tarball(archive_files(data, max_bytes=max_bytes))


def archive_files(data: bytes, *, max_bytes: int) -> list[tuple[str, bytes]]:
    """The (path, bytes) of a tarball's files, checked as ``read_snapshot`` checks them."""
    files: list[tuple[str, bytes]] = []
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
            scanned = 0
            for count, member in enumerate(archive, 1):
                scanned += member.size
                if count > MAX_ARCHIVE_ENTRIES:
                    raise BadRequest(
                        f"the archive has over {MAX_ARCHIVE_ENTRIES} entries; leave out generated files"
                    )
                if scanned > MAX_ARCHIVE_SCAN_FACTOR * max_bytes:
                    raise BadRequest(
                        f"the archive holds over {MAX_ARCHIVE_SCAN_FACTOR * max_bytes} bytes "
                        "(skipped directories included); leave out generated files"
                    )
                if member.isdir():
                    continue
                if not member.isfile():
                    raise BadRequest(f"archive member {member.name!r} is not a regular file")
                path = safe_relative_path(member.name)
                if any(part in EXCLUDED_DIRS for part in PurePosixPath(path).parts[:-1]):
                    continue
                total += member.size
                if total > max_bytes:
                    raise BadRequest(f"project is larger than MAX_PROJECT_BYTES={max_bytes}")
                handle = archive.extractfile(member)
                files.append((path, handle.read() if handle else b""))
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BadRequest(f"not a readable tar archive: {exc}") from None
    if not files:
        raise BadRequest("the archive holds no files")
    return files


def safe_relative_path(name: str) -> str:
    """A normalised relative POSIX path, or ``BadRequest`` naming what is wrong with it."""
    if not name or "\x00" in name:
        raise BadRequest(f"invalid path {name!r}")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise BadRequest(f"absolute path {name!r} not allowed")
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if not parts or ".." in parts:
        raise BadRequest(f"path {name!r} leaves the project directory")
    return "/".join(parts)


def _tarball(files: list[tuple[str, bytes]]) -> Snapshot:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as archive:
        for path, data in files:
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
    return Snapshot(data=buffer.getvalue(), file_count=len(files), size_bytes=sum(len(d) for _, d in files))
