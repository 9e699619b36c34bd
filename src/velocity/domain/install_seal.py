"""What an install left in ``node_modules``, as one digest both sides of a sandbox compute alike.

The agent seals its install as soon as npm exits, before any dev server runs; the host seals the
tree again when the machine is gone and keeps it for the owner's next preview only if the two agree.
So whatever the preview's code changed in ``node_modules`` after its install (a poisoned package, a
planted link) ends with that preview instead of reaching the next one.

The digest covers each entry's relative path, kind, executable bits and content (a link's target,
never what it points to); tools' caches that are rebuilt per preview (``SCRATCH``) are left out.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

# Vite's and tools' caches, written while the dev server runs and removed before a tree is kept.
SCRATCH = (".vite", ".vite-temp", ".cache")


def seal(modules: Path) -> str | None:
    """The digest of the tree at ``modules``; None when it is not a directory (a link is not)."""
    try:
        if not stat.S_ISDIR(os.lstat(modules).st_mode):
            return None
    except OSError:
        return None
    digest = hashlib.sha256()
    for directory, dirs, files in os.walk(modules):  # never follows links
        here = Path(directory)
        if here == modules:
            dirs[:] = [name for name in dirs if name not in SCRATCH]
            files = [name for name in files if name not in SCRATCH]
        dirs.sort()
        for name in sorted((*dirs, *files)):
            digest.update(_entry(here / name, (here / name).relative_to(modules)))
    return digest.hexdigest()


def _entry(path: Path, relative: Path) -> bytes:
    mode = os.lstat(path).st_mode
    name = os.fsencode(relative)
    if stat.S_ISREG(mode):
        with path.open("rb") as handle:
            content = hashlib.file_digest(handle, "sha256").hexdigest()
        return b"F %s %o %s\0" % (name, mode & 0o111, content.encode())
    if stat.S_ISLNK(mode):
        return b"L %s %s\0" % (name, os.fsencode(os.readlink(path)))
    if stat.S_ISDIR(mode):
        return b"D %s\0" % name
    return b"O %s %o\0" % (name, stat.S_IFMT(mode))
