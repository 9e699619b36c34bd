"""The seal of an install: what the agent reports after npm and the host checks before keeping a tree."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from velocity.domain.install_seal import seal


def tree(root: Path) -> Path:
    modules = root / "node_modules"
    (modules / "vite" / "bin").mkdir(parents=True)
    (modules / "vite" / "bin" / "vite.js").write_text("#!/usr/bin/env node\n")
    (modules / "vite" / "bin" / "vite.js").chmod(0o755)
    (modules / ".bin").mkdir()
    (modules / ".bin" / "vite").symlink_to("../vite/bin/vite.js")
    (modules / ".package-lock.json").write_text("{}")
    return modules


def test_the_same_tree_seals_the_same_wherever_it_lies(tmp_path: Path) -> None:
    """The agent seals /workspace/node_modules, the host the same disk mounted elsewhere."""
    assert seal(tree(tmp_path / "inside")) == seal(tree(tmp_path / "on-host"))


CHANGES: dict[str, Callable[[Path], object]] = {
    "content": lambda m: (m / "vite" / "bin" / "vite.js").write_text("globalThis.POISONED = 1\n"),
    "an added file": lambda m: (m / "vite" / "extra.js").write_text(""),
    "a removed file": lambda m: (m / ".package-lock.json").unlink(),
    "the executable bit": lambda m: (m / "vite" / "bin" / "vite.js").chmod(0o644),
    "a link's target": lambda m: (os.unlink(m / ".bin" / "vite"), (m / ".bin" / "vite").symlink_to("/tmp")),
    "a file put where a link was": lambda m: (
        os.unlink(m / ".bin" / "vite"),
        (m / ".bin" / "vite").write_text("../vite/bin/vite.js"),
    ),
    "an empty directory": lambda m: (m / "new-package").mkdir(),
}


@pytest.mark.parametrize("change", CHANGES, ids=list(CHANGES))
def test_any_change_to_the_installed_packages_changes_the_seal(tmp_path: Path, change: str) -> None:
    modules = tree(tmp_path)
    before = seal(modules)
    CHANGES[change](modules)
    assert seal(modules) != before


def test_tools_caches_at_the_top_are_not_part_of_the_seal(tmp_path: Path) -> None:
    """Vite writes node_modules/.vite while the dev server runs; the host drops it before keeping."""
    modules = tree(tmp_path)
    before = seal(modules)
    for scratch in (".vite", ".vite-temp", ".cache"):
        (modules / scratch).mkdir()
        (modules / scratch / "deps.js").write_text("rebuilt per preview")
    assert seal(modules) == before
    (modules / "vite" / ".cache").mkdir()  # deeper down it is a package's own file
    assert seal(modules) != before


def test_a_node_modules_that_is_not_a_directory_has_no_seal(tmp_path: Path) -> None:
    modules = tree(tmp_path / "real")
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "node_modules").symlink_to(modules)
    assert seal(tmp_path / "ws" / "node_modules") is None
    assert seal(tmp_path / "missing") is None
