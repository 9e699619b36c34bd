"""Snapshots live in the database with their projects; those an earlier version kept as files move in."""

from __future__ import annotations

from pathlib import Path

from tests.service.world import ALICE, World
from velocity.projects import pack_directory


async def test_snapshot_files_of_an_earlier_version_move_into_the_database(
    world: World, tmp_path: Path
) -> None:
    """A data directory from before keeps ``projects/<id>/snapshot.tar.gz``: at start each one whose
    project is known is saved with it (its dependencies digested) and the file removed; files of
    unknown projects are left alone."""
    app = tmp_path / "with-lockfile"
    app.mkdir()
    (app / "package.json").write_text('{"name": "app", "dependencies": {"left-pad": "1.3.0"}}')
    (app / "package-lock.json").write_text('{"lockfileVersion": 3, "packages": {}}')
    old = pack_directory(app, max_bytes=1 << 20).data
    root = tmp_path / "projects"
    for project_id in ("alice-one", "nobody-s"):
        (root / project_id).mkdir(parents=True)
        (root / project_id / "snapshot.tar.gz").write_bytes(old)

    assert await world.projects.adopt_legacy_snapshots(root) == 1
    assert await world.projects.snapshot(ALICE, "alice-one") == old
    assert await world.store.dependencies_key("alice-one") is not None
    assert not (root / "alice-one" / "snapshot.tar.gz").exists()
    assert (root / "nobody-s" / "snapshot.tar.gz").exists()
    assert await world.projects.adopt_legacy_snapshots(root) == 0, "a second start moves nothing"
