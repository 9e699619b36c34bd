"""Keeping a sandbox's node_modules: the tree is the sandbox's writing, so the host side follows none
of its links (an attack from a sandbox got a host directory's files deleted this way)."""

from __future__ import annotations

import os
from pathlib import Path

from velocity.domain.install_seal import seal
from velocity.providers.local.modules import ModulesCache


def sealed(workspace: Path) -> Path:
    """The seal file of a machine whose agent sealed ``workspace``'s node_modules as it is now."""
    seal_file = workspace.parent / f"{workspace.name}.seal"
    seal_file.write_text(seal(workspace / "node_modules") or "")
    return seal_file


def installed(workspace: Path) -> Path:
    modules = workspace / "node_modules"
    (modules / "vite").mkdir(parents=True)
    (modules / "vite" / "index.js").write_text("export default 1\n")
    (modules / ".package-lock.json").write_text("{}")
    return modules


def victim_directory(tmp_path: Path) -> Path:
    """A host directory a sandbox must not be able to touch, laid out like a kept install."""
    victim = tmp_path / "host-files"
    (victim / ".vite").mkdir(parents=True)
    (victim / ".vite" / "precious").write_text("keep me")
    (victim / ".package-lock.json").write_text("{}")
    return victim


def test_a_complete_install_is_kept_and_linked_into_the_next_workspace(tmp_path: Path) -> None:
    cache = ModulesCache(tmp_path / "cache", entries=5)
    modules = installed(tmp_path / "ws")
    seal_file = sealed(tmp_path / "ws")
    (modules / ".vite").mkdir()  # the dev server's scratch, written after the seal
    assert cache.keep("owner-key", tmp_path / "ws", seal_file)
    assert not (tmp_path / "cache" / "owner-key" / "node_modules" / ".vite").exists(), "scratch is dropped"
    assert os.stat(tmp_path / "cache").st_mode & 0o077 == 0, "no other host user reaches the cache"
    (tmp_path / "next").mkdir()
    assert cache.link("owner-key", tmp_path / "next", tmp_path / "next.seal")
    assert (tmp_path / "next" / "node_modules" / "vite").is_dir()
    assert (tmp_path / "next.seal").read_text() == seal_file.read_text(), "the seal goes with the tree"


def test_a_tree_changed_after_its_install_was_sealed_is_not_kept(tmp_path: Path) -> None:
    """What the preview's code wrote into node_modules after npm (a poisoned package) ends with it."""
    modules = installed(tmp_path / "ws")
    seal_file = sealed(tmp_path / "ws")
    (modules / "vite" / "index.js").write_text("globalThis.POISONED = 1\n")
    cache = ModulesCache(tmp_path / "cache", entries=5)
    assert not cache.keep("key", tmp_path / "ws", seal_file)
    assert not cache.ready_to_keep(tmp_path / "ws", seal_file)
    assert not (tmp_path / "cache" / "key").exists()


def test_a_tree_no_agent_sealed_is_not_kept(tmp_path: Path) -> None:
    installed(tmp_path / "ws")
    cache = ModulesCache(tmp_path / "cache", entries=5)
    assert not cache.keep("key", tmp_path / "ws", tmp_path / "never-written")
    empty = tmp_path / "empty.seal"
    empty.write_text("")  # the agent's descriptor, opened by the host, never written to
    assert not cache.ready_to_keep(tmp_path / "ws", empty)


def test_a_kept_tree_changed_in_place_through_its_links_is_dropped_before_the_next_link(
    tmp_path: Path,
) -> None:
    """Hard links share their files with the cache: a sandbox writing into one changes the kept copy,
    so the next machine does not get that tree but installs afresh."""
    cache = ModulesCache(tmp_path / "cache", entries=5)
    installed(tmp_path / "ws")
    assert cache.keep("key", tmp_path / "ws", sealed(tmp_path / "ws"))
    (tmp_path / "first").mkdir()
    assert cache.link("key", tmp_path / "first", tmp_path / "first.seal")
    with (tmp_path / "first" / "node_modules" / "vite" / "index.js").open("a") as same_inode:
        same_inode.write("globalThis.POISONED = 1\n")
    (tmp_path / "second").mkdir()
    assert not cache.link("key", tmp_path / "second", tmp_path / "second.seal")
    assert not (tmp_path / "second" / "node_modules").exists()
    assert not (tmp_path / "cache" / "key").exists()


def test_a_kept_disk_and_its_seal_go_to_one_machine_together(tmp_path: Path) -> None:
    cache = ModulesCache(tmp_path / "cache", entries=5)
    image, seal_file = tmp_path / "workspace.img", tmp_path / "install-seal"
    image.write_bytes(b"a disk")
    seal_file.write_text("digest")
    assert cache.keep_image("key", image, seal_file)
    assert cache.claim("key", tmp_path / "mine.img", tmp_path / "mine.seal")
    assert (tmp_path / "mine.seal").read_text() == "digest"
    assert not cache.claim("key", tmp_path / "theirs.img", tmp_path / "theirs.seal")
    # A disk kept without a seal (by an older orchestrator) is given to nobody.
    (tmp_path / "cache" / "old.img").write_bytes(b"an unsealed disk")
    assert not cache.claim("old", tmp_path / "other.img", tmp_path / "other.seal")


def test_a_node_modules_that_is_a_link_is_not_kept(tmp_path: Path) -> None:
    victim = victim_directory(tmp_path)
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "node_modules").symlink_to(victim)
    seal_file = tmp_path / "ws.seal"
    seal_file.write_text(seal(victim) or "")  # even with the agent's word for the tree it points to
    assert not ModulesCache(tmp_path / "cache", entries=5).keep("key", tmp_path / "ws", seal_file)
    assert (victim / ".vite" / "precious").read_text() == "keep me"
    assert (victim / ".package-lock.json").exists()


def test_a_scratch_directory_that_is_a_link_is_removed_as_a_link(tmp_path: Path) -> None:
    victim = victim_directory(tmp_path)
    modules = tmp_path / "ws" / "node_modules"
    modules.mkdir(parents=True)
    (modules / ".package-lock.json").write_text("{}")
    (modules / ".vite").symlink_to(victim / ".vite")
    (modules / ".cache").symlink_to(victim)
    assert ModulesCache(tmp_path / "cache", entries=5).keep("key", tmp_path / "ws", sealed(tmp_path / "ws"))
    assert (victim / ".vite" / "precious").read_text() == "keep me"
    kept = tmp_path / "cache" / "key" / "node_modules"
    assert not os.path.lexists(kept / ".vite") and not os.path.lexists(kept / ".cache")


def test_an_install_marker_that_is_a_link_is_not_a_complete_install(tmp_path: Path) -> None:
    victim = victim_directory(tmp_path)
    modules = tmp_path / "ws" / "node_modules"
    modules.mkdir(parents=True)
    (modules / ".package-lock.json").symlink_to(victim / ".package-lock.json")
    seal_file = sealed(tmp_path / "ws")
    assert not ModulesCache(tmp_path / "cache", entries=5).keep("key", tmp_path / "ws", seal_file)
