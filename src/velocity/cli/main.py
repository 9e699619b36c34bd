"""``velocity``: the orchestrator and its tools, for people."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from velocity import logs
from velocity.auth import Caller
from velocity.cli.client import LOCAL_USER, Api, local_token
from velocity.cli.fly_commands import fly_app
from velocity.cli.progress import events, follow
from velocity.cli.push import Pusher, push_command
from velocity.cli.tables import age, table
from velocity.domain import ConfigError, PreviewError, PreviewState, ProviderError
from velocity.projects import pack_directory
from velocity.server import LoopFailed, running
from velocity.settings import Settings, load_settings

app = typer.Typer(help="Velocity Previews: live previews of user code.", no_args_is_help=True)
projects_app = typer.Typer(help="Projects the orchestrator can preview.", no_args_is_help=True)
previews_app = typer.Typer(help="Previews: create, list, remove, read logs.", no_args_is_help=True)
app.add_typer(projects_app, name="projects")
app.add_typer(previews_app, name="previews")
app.add_typer(fly_app)  # no name: fly-emulator, smoke-test, doctor and machines join the top level
app.command("push")(push_command)
console = Console()

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "react-vite"
Url = Annotated[str | None, typer.Option(help="orchestrator URL (default: VELOCITY_PUBLIC_URL or localhost)")]
Token = Annotated[str | None, typer.Option(help="bearer token (default: VELOCITY_TOKEN, or a local one)")]


def _settings(**overrides: object) -> Settings:
    try:
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except PreviewError as exc:
        typer.secho(exc.message, fg="red", err=True)
        raise typer.Exit(2) from None


def _until_done(work: Coroutine[Any, Any, None]) -> None:
    """Run the orchestrator; what stops it from starting (a setting missing for its provider, no
    sandbox tool) is one line naming it and exit status 2, not a traceback."""
    try:
        asyncio.run(work)
    except (ConfigError, ProviderError) as exc:
        typer.secho(f"velocity: {exc.message}", fg="red", err=True)
        raise typer.Exit(2) from None
    except LoopFailed as exc:
        # A bug: its traceback, then a status that makes a supervisor (Fly, systemd) start it again.
        logging.getLogger("velocity").error("%s", exc, exc_info=exc.__cause__)
        raise typer.Exit(1) from None


# Loggers whose lines are for -v: one per egress connection, Alembic's migration chatter, one per
# HTTP call the orchestrator makes, one per retry of a Fly call (the metrics count them).
# Without -v, each shows only from the level given here.
CHATTY = {
    "httpx": logging.WARNING,
    "alembic": logging.WARNING,
    "velocity.egress": logging.WARNING,
    "stamina": logging.ERROR,  # its retries are WARNINGs
}
Verbose = Annotated[
    int, typer.Option("--verbose", "-v", count=True, help="more log lines (-v: each connection; -vv: debug)")
]
Host = Annotated[str | None, typer.Option(help="address to listen on (default VELOCITY_HOST)")]
Port = Annotated[int | None, typer.Option(help="port to listen on, 0 for any (default VELOCITY_PORT)")]
DataDir = Annotated[
    Path | None,
    typer.Option(help="where the database, sandboxes and caches live (default VELOCITY_DATA_DIR)"),
]


def _logging(verbose: int = 0, log_format: str = "auto") -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO
    logs.configure(level=level, json_lines={"json": True, "console": False}.get(log_format))
    for name, quiet in CHATTY.items():
        logging.getLogger(name).setLevel(level if verbose else quiet)


def _listen_settings(host: str | None, port: int | None, data_dir: Path | None) -> Settings:
    return _settings(velocity_host=host, velocity_port=port, velocity_data_dir=data_dir)


@app.command()
def up(
    project: Annotated[Path, typer.Option(help="project directory to preview")] = EXAMPLE,
    project_id: Annotated[str, typer.Option(help="id to register it under")] = "example",
    watch: Annotated[bool, typer.Option(help="send the directory's edits to the preview as you save")] = True,
    host: Host = None,
    port: Port = None,
    data_dir: DataDir = None,
    verbose: Verbose = 0,
) -> None:
    """Start the orchestrator, preview a project (the bundled example by default) and follow its
    edits, as `vite dev` would; serve until Ctrl-C."""
    settings = _listen_settings(host, port, data_dir)
    _logging(verbose, settings.log_format)
    try:
        _until_done(_up(settings, project, project_id, watch=watch))
    except PreviewError as exc:
        typer.secho(f"error: {exc.message}", fg="red", err=True)


async def _up(settings: Settings, project: Path, project_id: str, *, watch: bool) -> None:
    async with running(settings, handle_signals=True) as orchestrator:
        runtime = orchestrator.runtime
        user = Caller(subject=LOCAL_USER, role="authenticated")
        snapshot = pack_directory(project, max_bytes=runtime.settings.max_project_bytes)
        await runtime.projects.import_archive(user, project_id, name=project.name, archive=snapshot.data)
        started = time.perf_counter()
        preview, _ = await runtime.previews.create(user, project_id)
        token = runtime.issuer.mint_user(LOCAL_USER, ttl_seconds=12 * 3600)
        # Long values on one line each, however narrow the terminal: they are there to be copied.
        console.print(f"[bold]orchestrator[/] {runtime.settings.orchestrator_url}  (API docs: /docs)")
        console.print(f"[bold]API token[/]    {token}", soft_wrap=True)
        with console.status("provisioning") as status:
            while preview.state in (PreviewState.PROVISIONING, PreviewState.BOOTING):
                stage = await runtime.previews.stage(preview)
                status.update(f"{stage} ({time.perf_counter() - started:.1f} s)")
                await asyncio.sleep(0.1)
                preview = await runtime.previews.get(user, preview.id)
        if preview.state != PreviewState.READY:
            console.print(f"[red]preview {preview.state.value}[/]: {preview.failure_reason}")
            for line in preview.failure_logs[-20:]:
                console.print(f"  {line}", markup=False)
            return
        console.print(
            f"[green]ready[/] in {time.perf_counter() - started:.2f} s: "
            f"[bold]{runtime.settings.preview_url(preview.id)}[/]",
            soft_wrap=True,
        )
        if runtime.settings.preview_access == "private":
            seconds = runtime.settings.preview_access_link_seconds
            console.print(f"[bold]open[/]         {runtime.access.link(preview)}", soft_wrap=True)
            console.print(f"(the link signs this browser in to the private preview; valid {seconds} s)")
        stop = threading.Event()
        watching = (
            asyncio.create_task(
                asyncio.to_thread(_follow_edits, runtime.settings, project, preview.id, token, stop)
            )
            if watch
            else None
        )
        console.print("Ctrl-C stops everything.")
        try:
            await orchestrator.wait()
        finally:
            stop.set()
            if watching is not None:
                with contextlib.suppress(Exception, typer.Exit):
                    await watching
        console.print("stopping previews...")


def _follow_edits(
    settings: Settings, directory: Path, preview_id: str, token: str, stop: threading.Event
) -> None:
    """``velocity push --watch`` inside ``up``: each save reaches the preview over Realtime."""
    api = Api(settings, url=settings.orchestrator_url, token=token)
    pusher = Pusher(api, directory, preview_id, save=True, max_bytes=settings.max_project_bytes)
    pusher.watch(
        lambda: console.print(f"watching {directory}: saved edits reach the preview (--no-watch: off)"),
        stop=stop,
    )


@app.command()
def serve(
    keep_previews: Annotated[
        bool, typer.Option(help="leave previews running on exit; the next start adopts them")
    ] = False,
    host: Host = None,
    port: Port = None,
    data_dir: DataDir = None,
    verbose: Verbose = 0,
) -> None:
    """Run the orchestrator (API, router, reaper and reconciler) until Ctrl-C."""
    settings = _listen_settings(host, port, data_dir)
    _logging(verbose, settings.log_format)

    async def main() -> None:
        async with running(settings, stop_previews=not keep_previews, handle_signals=True) as orchestrator:
            console.print(f"serving on {orchestrator.settings.orchestrator_url}", soft_wrap=True)
            await orchestrator.wait()

    _until_done(main())


@app.command()
def token(
    user: Annotated[str, typer.Option(help="the token's subject (user id)")] = LOCAL_USER,
    ttl_hours: Annotated[float, typer.Option(help="lifetime in hours")] = 12,
    operator: Annotated[bool, typer.Option(help="with the operator role (admin endpoints)")] = False,
) -> None:
    """Print a user access token signed with the local key."""
    typer.echo(local_token(_settings(), user=user, ttl_seconds=ttl_hours * 3600, operator=operator))


@projects_app.command("import")
def projects_import(
    directory: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="project directory")],
    project_id: Annotated[
        str | None, typer.Option("--id", help="project id (default: directory name)")
    ] = None,
    name: Annotated[str | None, typer.Option(help="display name")] = None,
    url: Url = None,
    token: Token = None,
) -> None:
    """Register a project directory (node_modules, .git and build output are left out)."""
    settings = _settings()
    pid = project_id or directory.resolve().name.lower()
    try:
        snapshot = pack_directory(directory, max_bytes=settings.max_project_bytes)
    except PreviewError as exc:
        typer.secho(exc.message, fg="red", err=True)
        raise typer.Exit(2) from None
    body = Api(settings, url=url, token=token).call(
        "PUT",
        f"/v1/projects/{pid}",
        params={"name": name or directory.resolve().name},
        content=snapshot.data,
        headers={"content-type": "application/gzip"},
    )
    typer.echo(f"imported {body['id']}: {body['file_count']} files, {body['size_bytes']} bytes")


@projects_app.command("ls")
def projects_ls(url: Url = None, token: Token = None) -> None:
    """List your projects."""
    body = Api(_settings(), url=url, token=token).call("GET", "/v1/projects")
    rows = [
        [p["id"], p["name"], str(p["file_count"]), str(p["size_bytes"]), p["updated_at"]]
        for p in body["projects"]
    ]
    console.print(table(["id", "name", "files", "bytes", "updated"], rows, whole={"id"}))


@previews_app.command("create")
def previews_create(
    project_id: Annotated[str, typer.Argument(help="project to preview")],
    wait: Annotated[bool, typer.Option(help="show progress until the preview is ready")] = True,
    url: Url = None,
    token: Token = None,
) -> None:
    """Create a preview (or get your live one) and follow it until it serves."""
    api = Api(_settings(), url=url, token=token)
    started = time.perf_counter()
    preview = api.call("POST", "/v1/previews", json={"project_id": project_id})
    if wait:
        with console.status(preview["state"]) as status:

            def show(text: str) -> None:
                status.update(f"{text} ({time.perf_counter() - started:.1f} s)")

            # The agent's own status messages, as they come; polling for an orchestrator without them.
            if preview["state"] in ("provisioning", "booting") and follow(api, preview["id"], show):
                preview = api.call("GET", f"/v1/previews/{preview['id']}")
            while preview["state"] in ("provisioning", "booting"):
                show(preview["stage"])
                time.sleep(0.2)
                preview = api.call("GET", f"/v1/previews/{preview['id']}")
    if preview["state"] == "failed":
        typer.secho(f"failed: {preview['failure_reason']}", fg="red", err=True)
        for line in preview["failure_logs"][-20:]:
            typer.echo(f"  {line}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{preview['id']} {preview['state']} {preview['url']}")
    if preview.get("access_url"):
        typer.echo(f"open (signs you in): {preview['access_url']}")


@previews_app.command("ls")
def previews_ls(url: Url = None, token: Token = None) -> None:
    """List your previews."""
    body = Api(_settings(), url=url, token=token).call("GET", "/v1/previews")
    previews = body["previews"]
    rows = [[p["id"], p["project_id"], p["state"], p["created_at"], p["url"]] for p in previews]
    console.print(table(["id", "project", "state", "created", "url"], rows, whole={"id", "url"}))


@previews_app.command("rm")
def previews_rm(preview_id: str, url: Url = None, token: Token = None) -> None:
    """Stop a preview and destroy its machine."""
    body = Api(_settings(), url=url, token=token).call("DELETE", f"/v1/previews/{preview_id}")
    typer.echo(f"{body['id']} {body['state']}")


@previews_app.command("logs")
def previews_logs(
    preview_id: str,
    tail: Annotated[int, typer.Option(help="how many lines")] = 200,
    follow_: Annotated[
        bool, typer.Option("--follow", "-f", help="then print new lines as they come, until the preview ends")
    ] = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Print the dev server's output."""
    api = Api(_settings(), url=url, token=token)
    body = api.call("GET", f"/v1/previews/{preview_id}/logs", params={"tail": tail})
    for line in body["lines"]:
        typer.echo(line["line"])
    if not follow_:
        return
    try:
        for kind, data in events(api, preview_id):
            if kind == "log":
                typer.echo(data.get("line", ""))
            elif kind == "state" and data.get("state") in ("stopped", "failed"):
                typer.secho(
                    f"the preview {data['state']}" + (f": {data['detail']}" if data.get("detail") else ""),
                    err=True,
                )
    except KeyboardInterrupt:
        return


@previews_app.command("watch")
def previews_watch(
    interval: Annotated[float, typer.Option(help="seconds between refreshes")] = 1.0,
    times: Annotated[int, typer.Option(help="refreshes before it ends (0: until Ctrl-C)")] = 0,
    url: Url = None,
    token: Token = None,
) -> None:
    """Your previews as a live table: state, what a booting one is doing, age, URL."""
    api = Api(_settings(), url=url, token=token)
    shown = 0
    try:
        with Live(console=console, auto_refresh=False) as live:
            while True:
                live.update(_previews_table(api.call("GET", "/v1/previews")["previews"]), refresh=True)
                shown += 1
                if times and shown >= times:
                    return
                time.sleep(interval)
    except KeyboardInterrupt:
        return


def _previews_table(previews: list[dict[str, Any]]) -> Table:
    now = datetime.now(UTC)
    rows = [
        [
            p["id"],
            p["project_id"],
            p["state"],
            p.get("stage") or "",
            age(now - datetime.fromisoformat(p["created_at"].replace("Z", "+00:00"))),
            p["url"],
        ]
        for p in previews
    ]
    return table(["id", "project", "state", "stage", "age", "url"], rows, whole={"id", "url"})
