"""The editor's file messages (``file_changed``, ``file_deleted``, ``files_batch``), checked and applied.

A message is parsed into a ``Change`` before anything touches the disk: every path must pass
``Workspace.parts`` (relative, no ``..``, no NUL, not under ``node_modules/`` or ``.git/``), every
content must decode, and no file may be larger than one message of the contract carries. Then the
directories on the way are checked for symbolic links, so that a batch with one bad path writes
nothing. The writes themselves go through ``Workspace``, which walks directories without following
links and renames a temporary file over the target, so the check above is not what keeps a write
inside the workspace: it is what keeps a batch whole.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from velocity.agent.workspace import Workspace
from velocity.domain.errors import BadRequest
from velocity.realtime.contract import FILE_CHANGED, FILE_DELETED, FILES_BATCH, MAX_MESSAGE_BYTES

EVENTS = frozenset({FILE_CHANGED, FILE_DELETED, FILES_BATCH})


class Refused(Exception):
    """A change the agent will not apply; ``path`` is the file it is about ("" when there is none)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(reason)
        self.path = path
        self.reason = reason

    @property
    def detail(self) -> str:
        shown = self.path if len(self.path) <= 200 else self.path[:200] + "..."
        return f"refused {shown!r}: {self.reason}" if self.path else f"refused a change: {self.reason}"


@dataclass(frozen=True, slots=True)
class Change:
    """Files to write and to delete, by normalised path (each path at most once)."""

    writes: tuple[tuple[str, bytes], ...] = ()
    deletes: tuple[str, ...] = ()
    seq: int | None = None

    @property
    def paths(self) -> list[str]:
        return [path for path, _ in self.writes] + list(self.deletes)

    @property
    def dependencies(self) -> bool:
        """Whether it touches package.json or a lockfile: the dependencies need installing again."""
        return any(Workspace.affects_dependencies(path) for path in self.paths)

    def then(self, later: Change) -> Change:
        """One change with the effect of this one followed by ``later``: the last word on each path wins."""
        final: dict[str, bytes | None] = {}
        for change in (self, later):
            for path in change.deletes:
                final.pop(path, None)
                final[path] = None
            for path, data in change.writes:
                final.pop(path, None)
                final[path] = data
        return Change(
            writes=tuple((path, data) for path, data in final.items() if data is not None),
            deletes=tuple(path for path, data in final.items() if data is None),
            seq=later.seq if later.seq is not None else self.seq,
        )


def parse(event: str, payload: Any) -> Change:
    """The change a message asks for, or ``Refused`` saying what is wrong with it."""
    if not isinstance(payload, Mapping):
        raise Refused("", f"the {event} payload must be a JSON object")
    seq = payload.get("seq")
    seq = seq if isinstance(seq, int) and not isinstance(seq, bool) else None
    if event == FILE_CHANGED:
        return Change(writes=(_file(payload),), seq=seq)
    if event == FILE_DELETED:
        return Change(deletes=(_path(payload.get("path")),), seq=seq)
    files, deleted = payload.get("files", []), payload.get("deleted", [])
    if not isinstance(files, list) or not isinstance(deleted, list):
        raise Refused("", "files_batch needs `files` and `deleted` lists")
    # Through ``then``, so that a path named twice in one batch is written once, the last one winning.
    return Change(deletes=tuple(_path(path) for path in deleted)).then(
        Change(writes=tuple(_file(entry) for entry in files), seq=seq)
    )


def check(workspace: Workspace, change: Change) -> None:
    """Refuse a change whose paths pass through a symbolic link or a file, or land on a directory."""
    for path in [path for path, _ in change.writes] + list(change.deletes):
        _check_directories(workspace.root, path)


def apply(workspace: Workspace, change: Change) -> None:
    """Check, then delete, then write (a rename is a delete plus a write). Synchronous: a live edit is
    a few small writes, quicker than handing them to a thread."""
    check(workspace, change)
    for path in change.deletes:
        try:
            workspace.delete(path)
        except BadRequest as exc:
            raise Refused(path, exc.message) from exc
    for path, data in change.writes:
        try:
            workspace.write(path, data)
        except BadRequest as exc:
            raise Refused(path, exc.message) from exc
        except OSError as exc:
            raise Refused(path, f"writing failed: {exc.strerror or exc}") from exc


def _path(value: Any) -> str:
    if not isinstance(value, str):
        raise Refused("", "every path must be a string")
    try:
        return "/".join(Workspace.parts(value))
    except BadRequest as exc:
        raise Refused(value, exc.message) from exc


def _file(entry: Any) -> tuple[str, bytes]:
    if not isinstance(entry, Mapping):
        raise Refused("", "every file must be an object {path, content, encoding}")
    path = _path(entry.get("path"))
    content, encoding = entry.get("content"), entry.get("encoding", "utf8")
    if not isinstance(content, str):
        raise Refused(path, "`content` must be a string")
    if encoding == "utf8":
        data = content.encode("utf-8", "surrogatepass")
    elif encoding == "base64":
        try:
            data = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise Refused(path, f"`content` is not valid base64: {exc}") from exc
    else:
        raise Refused(path, f"unknown encoding {encoding!r}: use utf8 or base64")
    if len(data) > MAX_MESSAGE_BYTES:
        raise Refused(
            path,
            f"{len(data)} bytes is more than one message carries ({MAX_MESSAGE_BYTES}); "
            "the file arrives with the next resync from the snapshot",
        )
    return path, data


def _check_directories(root: Path, path: str) -> None:
    parts = Workspace.parts(path)
    current = root
    for index, part in enumerate(parts):
        current = current / part
        try:
            info = os.lstat(current)
        except FileNotFoundError:
            return  # made as a directory by the write
        except OSError as exc:
            raise Refused(path, f"cannot inspect {part!r}: {exc.strerror or exc}") from exc
        last = index == len(parts) - 1
        if last:
            if stat.S_ISDIR(info.st_mode):
                raise Refused(path, "it is a directory")
            return
        if stat.S_ISLNK(info.st_mode):
            raise Refused(path, f"it passes through {part!r}, a symbolic link, which could lead outside")
        if not stat.S_ISDIR(info.st_mode):
            raise Refused(path, f"it passes through {part!r}, which is a file")
