"""``velocity push``: a project directory's changes sent to a preview, as an editor sends them.

The snapshot is the source of truth (docs/protocol.md, section 5), so a push first saves the
directory as the project, then broadcasts what changed on the preview channel: ``files_batch``
messages, each under the contract's size limit, through Realtime's REST broadcast endpoint (Supabase's
in production, the orchestrator's hub locally). A file too large for one message is not sent live;
the agent gets it from the snapshot when it next resyncs. ``--watch`` pushes again whenever files
change, until Ctrl-C.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
import watchfiles

from velocity.cli.client import Api
from velocity.domain import PreviewError
from velocity.projects import EXCLUDED_DIRS, archive_files, directory_files, pack_directory
from velocity.realtime.contract import FILES_BATCH, MAX_MESSAGE_BYTES, preview_topic
from velocity.settings import load_settings

# How often the watcher wakes without changes (it must, once, to say that it runs).
WATCH_TICK_MS = 200
# Room left in a message for the batch's own keys, the deletions' list and the seq.
_BATCH_OVERHEAD = 1_000


@dataclass(frozen=True, slots=True)
class Plan:
    """What the preview lacks: files to write (by path), paths to delete, files too large to send."""

    changed: dict[str, bytes] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    too_large: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.changed or self.deleted)


def plan(local: Mapping[str, bytes], remote: Mapping[str, bytes]) -> Plan:
    changed = {path: data for path, data in sorted(local.items()) if remote.get(path) != data}
    deleted = sorted(set(remote) - set(local))
    too_large = [path for path, data in changed.items() if len(_entry(path, data)) > _room()]
    return Plan(changed, deleted, too_large)


def batches(todo: Plan) -> list[dict[str, Any]]:
    """``files_batch`` payloads, in order, each whose JSON stays under ``MAX_MESSAGE_BYTES``."""
    payloads: list[dict[str, Any]] = []
    files: list[dict[str, Any]] = []
    size = 0
    for path, data in todo.changed.items():
        if path in todo.too_large:
            continue
        entry = _entry(path, data)
        if files and size + len(entry) > _room():
            payloads.append({"files": files, "deleted": []})
            files, size = [], 0
        files.append(json.loads(entry))
        size += len(entry) + 1  # and a comma
    if files or not payloads:
        payloads.append({"files": files, "deleted": []})
    # Deletions ride with the first message: a batch deletes before it writes, so a rename holds.
    payloads[0]["deleted"] = list(todo.deleted)
    return payloads


def _room() -> int:
    return MAX_MESSAGE_BYTES - _BATCH_OVERHEAD


def _entry(path: str, data: bytes) -> bytes:
    """One file of a batch as the JSON it will be: text as itself, anything else as base64."""
    try:
        content, encoding = data.decode("utf-8"), "utf8"
    except UnicodeDecodeError:
        content, encoding = base64.b64encode(data).decode(), "base64"
    entry = {"path": path, "content": content, "encoding": encoding}
    return json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode()


class Pusher:
    def __init__(self, api: Api, directory: Path, preview_id: str, *, save: bool, max_bytes: int) -> None:
        self._api = api
        self._directory = directory
        self._save = save
        self._max_bytes = max_bytes
        preview = api.call("GET", f"/v1/previews/{preview_id}")
        if preview["state"] == "suspended":  # wake it, so that its agent hears the edits
            preview = api.call("POST", f"/v1/previews/{preview_id}/keepalive")
        if preview["state"] not in ("provisioning", "booting", "ready", "suspended"):
            typer.secho(f"preview {preview_id} is {preview['state']}: create a new one", fg="red", err=True)
            raise typer.Exit(1)
        self.project_id: str = preview["project_id"]
        self._name = next(
            (p["name"] for p in api.call("GET", "/v1/projects")["projects"] if p["id"] == self.project_id),
            self.project_id,
        )
        realtime = api.call("GET", "/v1/realtime")
        self._broadcast_url = f"{realtime['url'].rstrip('/')}/api/broadcast"
        self._headers = {"apikey": realtime["anon_key"], "Authorization": f"Bearer {api.token}"}
        snapshot = api.request("GET", f"/v1/projects/{self.project_id}/snapshot").content
        self._sent: dict[str, bytes] = dict(archive_files(snapshot, max_bytes=max_bytes))
        self._seq = 0
        self._http = httpx.Client(timeout=30.0)

    def push(self) -> Plan:
        """Save the directory as the project, then broadcast what the preview has not got yet."""
        local = dict(directory_files(self._directory, max_bytes=self._max_bytes))
        todo = plan(local, self._sent)
        if not todo:
            return todo
        if self._save:
            archive = pack_directory(self._directory, max_bytes=self._max_bytes).data
            self._api.call(
                "PUT",
                f"/v1/projects/{self.project_id}",
                params={"name": self._name},
                content=archive,
                headers={"content-type": "application/gzip"},
            )
        for payload in batches(todo):
            self._seq += 1
            self._broadcast({**payload, "seq": self._seq})
        self._sent = local
        return todo

    def watch(self, started: Callable[[], None], *, stop: threading.Event | None = None) -> None:
        """Push after every burst of changes (watchfiles groups them), until Ctrl-C or ``stop``.
        ``started`` is called once the watcher runs, after a push of what changed before it did."""
        ignored = watchfiles.DefaultFilter(
            ignore_dirs=(*watchfiles.DefaultFilter.ignore_dirs, *EXCLUDED_DIRS)
        )
        watching = False
        # The watcher starts inside the first iteration; the first timeout tells us it runs.
        for changes in watchfiles.watch(
            self._directory,
            watch_filter=ignored,
            yield_on_timeout=True,
            rust_timeout=WATCH_TICK_MS,
            stop_event=stop,
        ):
            if changes or not watching:
                todo = self.push()
                if changes or todo:
                    report(todo)
            if not watching:
                watching = True
                started()

    def _broadcast(self, payload: dict[str, Any]) -> None:
        message = {
            "topic": preview_topic(self.project_id),
            "event": FILES_BATCH,
            "payload": payload,
            "private": True,
        }
        try:
            response = self._http.post(
                self._broadcast_url, json={"messages": [message]}, headers=self._headers
            )
        except httpx.HTTPError as exc:
            typer.secho(f"broadcasting to {self._broadcast_url} failed: {exc}", fg="red", err=True)
            raise typer.Exit(1) from None
        if response.status_code != 202:
            typer.secho(
                f"broadcast refused ({response.status_code}): {response.text[:300]}", fg="red", err=True
            )
            raise typer.Exit(1)


def report(todo: Plan) -> None:
    if not todo:
        typer.echo("up to date")
        return
    names = [*todo.changed, *(f"-{path}" for path in todo.deleted)]
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    typer.echo(f"pushed {len(todo.changed)} changed and {len(todo.deleted)} deleted: {shown}")
    for path in todo.too_large:
        typer.echo(f"  {path} is too large to send live; the preview gets it with its next resync")


def push_command(
    directory: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="project directory")],
    preview: Annotated[str, typer.Option("--preview", help="the preview to send the changes to")],
    watch: Annotated[bool, typer.Option(help="keep sending changes as files change, until Ctrl-C")] = False,
    save: Annotated[
        bool, typer.Option(help="save the directory as the project first (what a resync restores)")
    ] = True,
    url: Annotated[
        str | None, typer.Option(help="orchestrator URL (default: VELOCITY_PUBLIC_URL or localhost)")
    ] = None,
    token: Annotated[
        str | None, typer.Option(help="bearer token (default: VELOCITY_TOKEN, or a local one)")
    ] = None,
) -> None:
    """Send a project directory's changes to a preview (files_batch on its channel); --watch keeps going."""
    try:
        settings = load_settings()
    except PreviewError as exc:
        typer.secho(exc.message, fg="red", err=True)
        raise typer.Exit(2) from None
    pusher = Pusher(
        Api(settings, url=url, token=token),
        directory,
        preview,
        save=save,
        max_bytes=settings.max_project_bytes,
    )
    report(pusher.push())
    if watch:
        with contextlib.suppress(KeyboardInterrupt):
            pusher.watch(lambda: typer.echo(f"watching {directory} (Ctrl-C stops)"))
