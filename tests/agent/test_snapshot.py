"""Unpacking a snapshot: everything stays inside the workspace, or nothing is written at all."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from tests.agent.harness import tarball
from velocity.agent.identity import SHARED_UMASK
from velocity.agent.snapshot import extract
from velocity.domain.errors import BadRequest


def _with_member(info: tarfile.TarInfo, data: bytes = b"") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        ok = tarfile.TarInfo("ok.txt")
        ok.size = 2
        archive.addfile(ok, io.BytesIO(b"ok"))
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data) if data else None)
    return buffer.getvalue()


def _hardlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE
    info.linkname = target
    return info


def test_a_project_is_unpacked_into_the_workspace(tmp_path: Path) -> None:
    """Relative files and directories land under the destination, with links that stay inside."""
    data = tarball({"package.json": b"{}", "src/main.js": b"1"}, links={"src/alias.js": "main.js"})
    assert extract(data, tmp_path) == 3
    assert (tmp_path / "src/main.js").read_bytes() == b"1"
    assert (tmp_path / "src/alias.js").read_bytes() == b"1"


@pytest.mark.parametrize(
    "archive",
    [
        pytest.param(tarball({"../evil": b"x"}), id="parent-path"),
        pytest.param(tarball({"/tmp/evil": b"x"}), id="absolute-path"),
        pytest.param(tarball({}, links={"escape": "/etc/passwd"}), id="symlink-out"),
        pytest.param(tarball({}, links={"escape": "../../etc"}), id="relative-symlink-out"),
        pytest.param(_with_member(_hardlink("hard", "/etc/passwd")), id="hardlink-out"),
    ],
)
def test_a_member_leading_out_refuses_the_whole_snapshot(tmp_path: Path, archive: bytes) -> None:
    """One unsafe member refuses the snapshot, and not even the safe members are written."""
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    with pytest.raises(BadRequest, match="refused"):
        extract(archive, workspace)
    assert list(workspace.iterdir()) == []
    assert not (tmp_path / "evil").exists()


def test_what_the_snapshot_holds_the_project_s_user_may_change(tmp_path: Path) -> None:
    """The project's user shares the agent's group: files and directories come out group-writable
    (Python's data filter takes that bit away), never setuid or writable by others."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, mode, kind in (
            ("src", 0o755, tarfile.DIRTYPE),
            ("src/next-env.d.ts", 0o4646, tarfile.REGTYPE),
        ):
            info = tarfile.TarInfo(name)
            info.type, info.mode = kind, mode
            archive.addfile(info, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)
    previous = os.umask(SHARED_UMASK)  # the agent's (velocity.agent.main)
    try:
        extract(buffer.getvalue(), tmp_path)
    finally:
        os.umask(previous)
    assert (tmp_path / "src").stat().st_mode & 0o7777 == 0o775
    assert (tmp_path / "src/next-env.d.ts").stat().st_mode & 0o7777 == 0o664


def test_something_else_than_a_tarball_is_refused(tmp_path: Path) -> None:
    """Bytes that are not a tar archive are a clear error, not a crash."""
    with pytest.raises(BadRequest, match="tarball"):
        extract(b"<html>not found</html>", tmp_path)
