"""Workspace.write and Workspace.delete: the one way live file sync changes the project's files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from velocity.agent.workspace import Workspace
from velocity.domain.errors import BadRequest


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    root = tmp_path / "project"
    root.mkdir()
    return Workspace(root)


def test_a_write_creates_the_file_and_its_directories(workspace: Workspace) -> None:
    """Missing directories are created and the content is written whole."""
    workspace.write("src/components/App.jsx", b"export default 1\n")
    assert (workspace.root / "src/components/App.jsx").read_bytes() == b"export default 1\n"


def test_a_write_replaces_a_file_and_keeps_its_mode(workspace: Workspace) -> None:
    """Replacing a file keeps its permission bits (an executable script stays executable)."""
    script = workspace.root / "run.sh"
    script.write_text("old")
    script.chmod(0o755)
    workspace.write("run.sh", b"new")
    assert script.read_text() == "new"
    assert script.stat().st_mode & 0o777 == 0o755


def test_a_write_leaves_no_temporary_file_behind(workspace: Workspace) -> None:
    """The temporary file is renamed over the target, so only the target remains."""
    workspace.write("./a//b.txt", b"x")
    assert sorted(p.name for p in workspace.root.rglob("*")) == ["a", "b.txt"]


@pytest.mark.parametrize(
    "path",
    [
        "",
        "/etc/passwd",
        "../outside.txt",
        "src/../../outside.txt",
        "node_modules/react/index.js",
        "packages/app/node_modules/x.js",
        ".git/config",
        "a\\b.js",
        "a\x00b",
        ".",
        "x" * 2000,
    ],
)
def test_paths_from_outside_are_confined(workspace: Workspace, path: str) -> None:
    """Absolute paths, '..', node_modules, .git, backslashes, NUL bytes, empty or huge paths are refused."""
    with pytest.raises(BadRequest):
        workspace.write(path, b"x")


def test_a_symlinked_directory_cannot_lead_out(workspace: Workspace, tmp_path: Path) -> None:
    """A directory symlink planted in the project (pointing anywhere) is not followed."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (workspace.root / "src").symlink_to(outside)
    with pytest.raises(BadRequest, match="symlink"):
        workspace.write("src/App.jsx", b"x")
    assert list(outside.iterdir()) == []


def test_a_symlinked_file_is_replaced_not_followed(workspace: Workspace, tmp_path: Path) -> None:
    """Writing over a file symlink replaces the link itself; its target is untouched."""
    target = tmp_path / "target.txt"
    target.write_text("keep")
    (workspace.root / "link.txt").symlink_to(target)
    workspace.write("link.txt", b"new")
    assert target.read_text() == "keep"
    assert not (workspace.root / "link.txt").is_symlink()
    assert (workspace.root / "link.txt").read_text() == "new"


def test_a_directory_is_not_overwritten(workspace: Workspace) -> None:
    """Writing a file where a directory stands is refused."""
    (workspace.root / "src").mkdir()
    with pytest.raises(BadRequest, match="directory"):
        workspace.write("src", b"x")


def test_delete_removes_a_file_and_reports_a_missing_one(workspace: Workspace) -> None:
    """delete returns True when it removed a file and False when there was none."""
    workspace.write("src/old.js", b"x")
    assert workspace.delete("src/old.js") is True
    assert not (workspace.root / "src/old.js").exists()
    assert workspace.delete("src/old.js") is False
    assert workspace.delete("nowhere/old.js") is False


def test_delete_is_confined_too(workspace: Workspace, tmp_path: Path) -> None:
    """delete refuses the same paths as write."""
    victim = tmp_path / "victim.txt"
    victim.write_text("x")
    with pytest.raises(BadRequest):
        workspace.delete("../victim.txt")
    assert victim.exists()


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("package.json", True),
        ("./package-lock.json", True),
        ("src/package.json", False),
        ("src/App.jsx", False),
    ],
)
def test_dependency_files_are_recognised(path: str, expected: bool) -> None:
    """Writing package.json or its lockfile calls for a reinstall; other files do not."""
    assert Workspace.affects_dependencies(path) is expected


def test_a_file_over_the_size_limit_is_refused(workspace: Workspace) -> None:
    """A single file larger than the limit is refused before anything is written."""
    with pytest.raises(BadRequest, match="larger"):
        workspace.write("big.bin", b"\0" * (10 * 1024 * 1024 + 1))
    assert not os.listdir(workspace.root)
