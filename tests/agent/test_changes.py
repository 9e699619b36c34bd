"""Editor messages turned into changes of the workspace: decoding, refusals, batches kept whole."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import pytest

from tests.agent.harness import tarball
from velocity.agent.changes import Change, Refused, apply, parse
from velocity.agent.logs import LogLine
from velocity.agent.pacing import Pacer
from velocity.agent.reports import LogLimiter
from velocity.agent.resync import differences, snapshot_files
from velocity.agent.workspace import Workspace
from velocity.realtime.contract import MAX_MESSAGE_BYTES


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    root = tmp_path / "project"
    root.mkdir()
    return Workspace(root)


def test_text_and_base64_files_are_written_with_their_bytes(workspace: Workspace) -> None:
    """utf8 content is the text, base64 content the bytes; a batch deletes before it writes."""
    (workspace.root / "old.txt").write_text("old")
    png = bytes(range(256))
    change = parse(
        "files_batch",
        {
            "files": [
                {"path": "src/App.jsx", "content": "<h1>Hé</h1>", "encoding": "utf8"},
                {"path": "logo.png", "content": base64.b64encode(png).decode(), "encoding": "base64"},
            ],
            "deleted": ["old.txt"],
            "seq": 4,
        },
    )
    apply(workspace, change)
    assert (workspace.root / "src/App.jsx").read_text() == "<h1>Hé</h1>"
    assert (workspace.root / "logo.png").read_bytes() == png
    assert not (workspace.root / "old.txt").exists()
    assert change.seq == 4


def test_a_deleted_file_that_is_missing_is_not_an_error(workspace: Workspace) -> None:
    """file_deleted of a path that does not exist does nothing."""
    apply(workspace, parse("file_deleted", {"path": "src/gone.js"}))


ATTACKS: list[tuple[str, dict[str, Any], str]] = [
    ("absolute", {"path": "/etc/passwd", "content": "x"}, "/etc/passwd"),
    ("dot-dot", {"path": "src/../../outside.txt", "content": "x"}, "src/../../outside.txt"),
    ("NUL", {"path": "src/a\x00b.js", "content": "x"}, "src/a\x00b.js"),
    ("node_modules", {"path": "node_modules/react/index.js", "content": "x"}, "node_modules/react/index.js"),
    ("oversize", {"path": "big.txt", "content": "x" * (MAX_MESSAGE_BYTES + 1)}, "big.txt"),
    ("bad base64", {"path": "a.bin", "content": "***", "encoding": "base64"}, "a.bin"),
    ("unknown encoding", {"path": "a.txt", "content": "x", "encoding": "latin1"}, "a.txt"),
]


@pytest.mark.parametrize(
    ("payload", "path"), [(p, path) for _, p, path in ATTACKS], ids=[a[0] for a in ATTACKS]
)
def test_bad_paths_and_contents_are_refused_naming_the_path(payload: dict[str, Any], path: str) -> None:
    """Each refusal carries the path it is about, and a sentence saying why."""
    with pytest.raises(Refused) as refused:
        parse("file_changed", payload)
    assert refused.value.path == path
    assert refused.value.detail.startswith("refused ")


def test_a_symlink_on_the_way_is_refused_and_nothing_lands_outside(
    workspace: Workspace, tmp_path: Path
) -> None:
    """A directory link planted in the project cannot carry a write out of it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (workspace.root / "escape").symlink_to(outside)
    with pytest.raises(Refused) as refused:
        apply(workspace, parse("file_changed", {"path": "escape/pwned.txt", "content": "x"}))
    assert refused.value.path == "escape/pwned.txt"
    assert "symbolic link" in refused.value.reason
    assert list(outside.iterdir()) == []


def test_a_batch_with_one_refused_path_writes_nothing(workspace: Workspace, tmp_path: Path) -> None:
    """The batch is checked whole first: the good file is not written either."""
    (workspace.root / "escape").symlink_to(tmp_path)
    batch = {
        "files": [
            {"path": "src/good.js", "content": "1", "encoding": "utf8"},
            {"path": "escape/bad.js", "content": "2", "encoding": "utf8"},
        ],
        "deleted": [],
    }
    with pytest.raises(Refused):
        apply(workspace, parse("files_batch", batch))
    assert not (workspace.root / "src").exists()


@pytest.mark.parametrize(
    ("paths", "reinstall"),
    [
        (["src/App.jsx"], False),
        (["package.json"], True),
        (["./package-lock.json"], True),
        (["a/package.json"], False),
    ],
)
def test_package_json_and_lockfiles_ask_for_a_reinstall(paths: list[str], reinstall: bool) -> None:
    """Only the project's own package.json and lockfiles change its dependencies."""
    assert Change(writes=tuple((p, b"{}") for p in paths)).dependencies is reinstall


def test_a_resync_writes_what_differs_and_deletes_what_the_project_lost(workspace: Workspace) -> None:
    """Same bytes are left alone; files the agent never knew as the project's are never deleted."""
    root = workspace.root
    (root / "same.txt").write_text("same")
    (root / "edited.txt").write_text("before")
    (root / "removed.txt").write_text("gone from the project")
    (root / "build.log").write_text("not the project's")
    files = snapshot_files(
        tarball(
            {"same.txt": b"same", "./edited.txt": b"after", "new/file.txt": b"new", "node_modules/x": b""}
        )
    )
    assert set(files) == {"same.txt", "edited.txt", "new/file.txt"}
    change = differences(root, files, known={"same.txt", "edited.txt", "removed.txt"})
    assert change.writes == (("edited.txt", b"after"), ("new/file.txt", b"new"))
    assert change.deletes == ("removed.txt",)


def test_log_lines_over_the_budget_are_dropped_and_counted() -> None:
    """A burst of 20 goes out, the rest is dropped; the next line after a refill says how many."""
    now = [0.0]
    limiter = LogLimiter("pv1", rate=10, burst=20, clock=lambda: now[0])
    sent = [limiter.admit(LogLine("stdout", f"line {i}", 0)) for i in range(25)]
    assert sum(message is not None for message in sent) == 20
    now[0] += 0.1  # one token back
    message = limiter.admit(LogLine("stderr", "after", 0))
    assert message == {"stream": "stderr", "line": "after", "preview_id": "pv1", "dropped": 5}


def test_changes_merged_in_order_keep_the_last_word_on_each_path() -> None:
    """A write after a delete writes, a delete after a write deletes; the later seq is kept."""
    first = Change(writes=(("a.txt", b"1"), ("b.txt", b"1")), seq=1)
    second = Change(writes=(("a.txt", b"2"),), deletes=("b.txt", "c.txt"), seq=2)
    merged = first.then(second).then(Change(writes=(("c.txt", b"3"),)))
    assert merged.writes == (("a.txt", b"2"), ("c.txt", b"3"))
    assert merged.deletes == ("b.txt",)
    assert merged.seq == 2


def test_a_file_written_moments_ago_waits_for_the_rest_of_the_gap() -> None:
    """The same file within the gap waits for what is left of it; another file does not wait."""
    now = [100.0]
    pacer = Pacer(gap=0.125, clock=lambda: now[0])
    assert pacer.delay(["src/App.jsx"]) == 0
    pacer.wrote(["src/App.jsx"])
    now[0] += 0.0625
    assert pacer.delay(["src/App.jsx", "src/other.js"]) == 0.0625
    assert pacer.delay(["src/other.js"]) == 0
    now[0] += 0.0625
    assert pacer.delay(["src/App.jsx"]) == 0


async def test_only_the_last_write_of_a_burst_is_confirmed_a_gap_later() -> None:
    """A lone write is not touched; in a burst, each write replaces the pending touch of the one before."""
    confirmed: list[str] = []
    done = asyncio.Event()

    def confirm(path: str) -> None:
        confirmed.append(path)
        done.set()

    pacer = Pacer(gap=0.01)
    pacer.wrote(["lone.txt"], confirm=confirm)
    for _ in range(3):
        pacer.wrote(["App.jsx"], confirm=confirm)
    async with asyncio.timeout(5):
        await done.wait()
    pacer.close()
    assert confirmed == ["App.jsx"]
