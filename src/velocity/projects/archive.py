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


@dataclass(frozen=True, slots=True)
class Snapshot:
    data: bytes  # the normalised tarball
    file_count: int
    size_bytes: int  # sum of file sizes, uncompressed


def pack_directory(root: Path, *, max_bytes: int) -> Snapshot:
    """Pack ``root`` (files only, excluded directories and symlinks skipped) into a snapshot."""
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
    return _tarball(files)


def read_snapshot(data: bytes, *, max_bytes: int) -> Snapshot:
    """Check an uploaded tarball and re-pack it: only regular files under safe relative paths."""
    files: list[tuple[str, bytes]] = []
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
            for member in archive:
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
    return _tarball(files)


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
