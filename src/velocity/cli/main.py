"""``velocity``: the orchestrator and its tools, for people."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from velocity.auth import Caller
from velocity.cli.client import LOCAL_USER, Api, local_token
from velocity.cli.fly_commands import fly_app
from velocity.cli.progress import follow
from velocity.cli.push import push_command
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


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # One line per proxied request or health check would drown what matters.
    logging.getLogger("httpx").setLevel(logging.WARNING)


@app.command()
def up(
    project: Annotated[Path, typer.Option(help="project directory to preview")] = EXAMPLE,
    project_id: Annotated[str, typer.Option(help="id to register it under")] = "example",
    port: Annotated[int | None, typer.Option(help="port (default VELOCITY_PORT)")] = None,
) -> None:
    """Start the orchestrator, preview a project (the bundled example by default), serve until Ctrl-C."""
    _logging()
    settings = _settings(velocity_port=port)
    try:
        _until_done(_up(settings, project, project_id))
    except PreviewError as exc:
        typer.secho(f"error: {exc.message}", fg="red", err=True)
        raise typer.Exit(1) from None


async def _up(settings: Settings, project: Path, project_id: str) -> None:
    async with running(settings, handle_signals=True) as orchestrator:
        runtime = orchestrator.runtime
        user = Caller(subject=LOCAL_USER, role="authenticated")
        snapshot = pack_directory(project, max_bytes=runtime.settings.max_project_bytes)
        await runtime.projects.import_archive(user, project_id, name=project.name, archive=snapshot.data)
        started = time.perf_counter()
        preview, _ = await runtime.previews.create(user, project_id)
        token = runtime.issuer.mint_user(LOCAL_USER, ttl_seconds=12 * 3600)
        console.print(f"[bold]orchestrator[/] {runtime.settings.orchestrator_url}  (API docs: /docs)")
        console.print(f"[bold]API token[/]    {token}")
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
            f"[bold]{runtime.settings.preview_url(preview.id)}[/]"
        )
        if runtime.settings.preview_access == "private":
            seconds = runtime.settings.preview_access_link_seconds
            console.print(f"[bold]open[/]         {runtime.access.link(preview)}", soft_wrap=True)
            console.print(f"(the link signs this browser in to the private preview; valid {seconds} s)")
        console.print("Ctrl-C stops everything.")
        await orchestrator.wait()
        console.print("stopping previews...")


@app.command()
def serve(
    keep_previews: Annotated[
        bool, typer.Option(help="leave previews running on exit; the next start adopts them")
    ] = False,
) -> None:
    """Run the orchestrator (API, router, reaper and reconciler) until Ctrl-C."""
    _logging()
    settings = _settings()

    async def main() -> None:
        async with running(settings, stop_previews=not keep_previews, handle_signals=True) as orchestrator:
            console.print(f"serving on {orchestrator.settings.orchestrator_url}")
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
    table = Table("id", "name", "files", "bytes", "updated")
    for p in body["projects"]:
        table.add_row(p["id"], p["name"], str(p["file_count"]), str(p["size_bytes"]), p["updated_at"])
    console.print(table)


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
    table = Table("id", "project", "state", "url", "created")
    for p in body["previews"]:
        table.add_row(p["id"], p["project_id"], p["state"], p["url"], p["created_at"])
    console.print(table)


@previews_app.command("rm")
def previews_rm(preview_id: str, url: Url = None, token: Token = None) -> None:
    """Stop a preview and destroy its machine."""
    body = Api(_settings(), url=url, token=token).call("DELETE", f"/v1/previews/{preview_id}")
    typer.echo(f"{body['id']} {body['state']}")


@previews_app.command("logs")
def previews_logs(
    preview_id: str,
    tail: Annotated[int, typer.Option(help="how many lines")] = 200,
    url: Url = None,
    token: Token = None,
) -> None:
    """Print the dev server's output."""
    body = Api(_settings(), url=url, token=token).call(
        "GET", f"/v1/previews/{preview_id}/logs", params={"tail": tail}
    )
    for line in body["lines"]:
        typer.echo(line["line"])
