"""Keeping a sandbox's node_modules: the tree is the sandbox's writing, so the host side follows none
of its links (an attack from a sandbox got a host directory's files deleted this way)."""

from __future__ import annotations

import os
from pathlib import Path

from velocity.providers.local.modules import ModulesCache


def victim_directory(tmp_path: Path) -> Path:
    """A host directory a sandbox must not be able to touch, laid out like a kept install."""
    victim = tmp_path / "host-files"
    (victim / ".vite").mkdir(parents=True)
    (victim / ".vite" / "precious").write_text("keep me")
    (victim / ".package-lock.json").write_text("{}")
    return victim


def test_a_complete_install_is_kept_and_linked_into_the_next_workspace(tmp_path: Path) -> None:
    cache = ModulesCache(tmp_path / "cache", entries=5)
    modules = tmp_path / "ws" / "node_modules"
    (modules / "vite").mkdir(parents=True)
    (modules / ".package-lock.json").write_text("{}")
    (modules / ".vite").mkdir()
    assert cache.keep("owner-key", tmp_path / "ws")
    assert not (tmp_path / "cache" / "owner-key" / "node_modules" / ".vite").exists(), "scratch is dropped"
    assert os.stat(tmp_path / "cache").st_mode & 0o077 == 0, "no other host user reaches the cache"
    (tmp_path / "next").mkdir()
    assert cache.link("owner-key", tmp_path / "next")
    assert (tmp_path / "next" / "node_modules" / "vite").is_dir()


def test_a_node_modules_that_is_a_link_is_not_kept(tmp_path: Path) -> None:
    victim = victim_directory(tmp_path)
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "node_modules").symlink_to(victim)
    assert not ModulesCache(tmp_path / "cache", entries=5).keep("key", tmp_path / "ws")
    assert (victim / ".vite" / "precious").read_text() == "keep me"
    assert (victim / ".package-lock.json").exists()


def test_a_scratch_directory_that_is_a_link_is_removed_as_a_link(tmp_path: Path) -> None:
    victim = victim_directory(tmp_path)
    modules = tmp_path / "ws" / "node_modules"
    modules.mkdir(parents=True)
    (modules / ".package-lock.json").write_text("{}")
    (modules / ".vite").symlink_to(victim / ".vite")
    (modules / ".cache").symlink_to(victim)
    assert ModulesCache(tmp_path / "cache", entries=5).keep("key", tmp_path / "ws")
    assert (victim / ".vite" / "precious").read_text() == "keep me"
    kept = tmp_path / "cache" / "key" / "node_modules"
    assert not os.path.lexists(kept / ".vite") and not os.path.lexists(kept / ".cache")


def test_an_install_marker_that_is_a_link_is_not_a_complete_install(tmp_path: Path) -> None:
    victim = victim_directory(tmp_path)
    modules = tmp_path / "ws" / "node_modules"
    modules.mkdir(parents=True)
    (modules / ".package-lock.json").symlink_to(victim / ".package-lock.json")
    assert not ModulesCache(tmp_path / "cache", entries=5).keep("key", tmp_path / "ws")
