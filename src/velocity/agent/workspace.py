"""The project's files on disk, and the one safe way to change them from outside.

Live file sync writes through ``Workspace.write`` and ``Workspace.delete``. Paths come from the editor,
across a trust boundary: they must be relative, may not climb out with ``..``, may not touch
``node_modules`` (the installer owns it) or ``.git``, and may not pass through a symlink, which user code could
plant to point anywhere. Directories are walked with ``O_NOFOLLOW`` file descriptors, so a symlink
swapped in between a check and the write cannot redirect it. Writes go to a temporary file that is
renamed over the target, so the dev server's watcher never reads half a file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path

from velocity.domain.errors import BadRequest
from velocity.domain.package_managers import DEPENDENCY_FILES

MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_PATH_LENGTH = 1024
# The installer owns node_modules; .git is history, not the preview's business.
_RESERVED = frozenset({"node_modules", ".git"})
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Workspace:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    @staticmethod
    def parts(rel_path: str) -> list[str]:
        """The normalised components of an outside path, or ``BadRequest`` saying what is wrong."""
        if not rel_path or len(rel_path) > MAX_PATH_LENGTH or "\x00" in rel_path:
            raise BadRequest(f"invalid file path {rel_path[:80]!r}: empty, too long or with a NUL byte")
        if rel_path.startswith("/") or "\\" in rel_path:
            raise BadRequest(
                f"file path {rel_path[:80]!r} must be relative to the project, with / separators"
            )
        parts = [part for part in rel_path.split("/") if part not in ("", ".")]
        if not parts or ".." in parts:
            raise BadRequest(f"file path {rel_path[:80]!r} may not contain '..'")
        if _RESERVED.intersection(parts):
            raise BadRequest(
                f"file path {rel_path[:80]!r} is inside node_modules or .git, which are not the project's"
            )
        return parts

    @staticmethod
    def affects_dependencies(rel_path: str) -> bool:
        return "/".join(Workspace.parts(rel_path)) in DEPENDENCY_FILES

    def write(self, rel_path: str, data: bytes) -> None:
        """Atomically create or replace one file, and its missing directories; a file keeps its mode."""
        if len(data) > MAX_FILE_BYTES:
            raise BadRequest(f"{rel_path[:80]!r} is larger than {MAX_FILE_BYTES // 2**20} MiB")
        parts = self.parts(rel_path)
        directory = self._open_directory(parts[:-1], rel_path, create=True)
        try:
            name = parts[-1]
            mode = self._mode_of(name, directory, rel_path)
            temporary = f".{name}.{secrets.token_hex(4)}.velocity-tmp"
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(temporary, flags, 0o600, dir_fd=directory)
            try:
                with os.fdopen(fd, "wb") as file:
                    os.fchmod(file.fileno(), mode)  # exactly the old mode, whatever the umask
                    file.write(data)
                os.rename(temporary, name, src_dir_fd=directory, dst_dir_fd=directory)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary, dir_fd=directory)
                raise
        finally:
            os.close(directory)

    def delete(self, rel_path: str) -> bool:
        """Remove one file; False when there was none. Directories are left alone."""
        parts = self.parts(rel_path)
        try:
            directory = self._open_directory(parts[:-1], rel_path, create=False)
        except FileNotFoundError:
            return False
        try:
            info = os.stat(parts[-1], dir_fd=directory, follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                raise BadRequest(f"{rel_path[:80]!r} is a directory")
            os.unlink(parts[-1], dir_fd=directory)
            return True
        except FileNotFoundError:
            return False
        finally:
            os.close(directory)

    def _open_directory(self, parts: list[str], rel_path: str, *, create: bool) -> int:
        fd = os.open(self.root, _DIR_FLAGS)
        try:
            for part in parts:
                try:
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    # Made by someone else meanwhile? The open below checks what it is.
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o755, dir_fd=fd)
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise BadRequest(
                            f"{rel_path[:80]!r} passes through {part!r}, a symlink or a file"
                        ) from exc
                    raise
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    @staticmethod
    def _mode_of(name: str, directory: int, rel_path: str) -> int:
        try:
            info = os.stat(name, dir_fd=directory, follow_symlinks=False)
        except FileNotFoundError:
            return 0o644
        if stat.S_ISDIR(info.st_mode):
            raise BadRequest(f"{rel_path[:80]!r} is a directory")
        # A symlink in the way is replaced, not followed.
        return stat.S_IMODE(info.st_mode) if stat.S_ISREG(info.st_mode) else 0o644
