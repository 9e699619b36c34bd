"""What ``velocity push`` sends: the files that differ from the snapshot, in messages under the limit."""

from __future__ import annotations

import base64
import json

from velocity.cli.push import Plan, batches, plan
from velocity.realtime.contract import MAX_MESSAGE_BYTES


def test_only_changed_new_and_deleted_files_are_planned() -> None:
    """Same bytes are not sent again; what the snapshot has and the directory lacks is deleted."""
    remote = {"package.json": b"{}", "src/App.jsx": b"old", "src/gone.js": b"x"}
    local = {"package.json": b"{}", "src/App.jsx": b"new", "src/new.js": b"y"}
    todo = plan(local, remote)
    assert todo.changed == {"src/App.jsx": b"new", "src/new.js": b"y"}
    assert todo.deleted == ["src/gone.js"]
    assert not plan(local, local)


def test_batches_stay_under_the_message_limit_and_carry_text_and_binary() -> None:
    """Big sets are split; binary goes as base64; deletions ride with the first message."""
    files = {f"src/f{i}.txt": b"x" * 60_000 for i in range(10)} | {"logo.png": b"\x89PNG\xff"}
    payloads = batches(Plan(changed=files, deleted=["old.txt"]))
    assert len(payloads) > 1
    assert all(len(json.dumps(p, separators=(",", ":")).encode()) <= MAX_MESSAGE_BYTES for p in payloads)
    assert payloads[0]["deleted"] == ["old.txt"] and all(p["deleted"] == [] for p in payloads[1:])
    sent = {f["path"]: f for p in payloads for f in p["files"]}
    assert set(sent) == set(files)
    assert sent["logo.png"]["encoding"] == "base64"
    assert base64.b64decode(sent["logo.png"]["content"]) == b"\x89PNG\xff"
    assert sent["src/f0.txt"]["encoding"] == "utf8"


def test_a_file_too_large_for_one_message_is_left_to_the_snapshot() -> None:
    """It is planned as too large and never put in a message; a deletion alone still goes out."""
    todo = plan({"huge.bin": b"\0" * MAX_MESSAGE_BYTES}, {"old.txt": b""})
    assert todo.too_large == ["huge.bin"]
    assert batches(todo) == [{"files": [], "deleted": ["old.txt"]}]
