"""The Fly commands: ``fly-emulator``, ``smoke-test``, ``doctor`` and ``machines ls|count|stuck``.

``fly_app`` is a Typer app the main CLI mounts with ``app.add_typer(fly_app)`` (no name: its commands
join the top level). The work happens in ``velocity.fly`` (doctor, smoke) and the providers; here are
the arguments, the tables and the exit codes (non-zero whenever something failed).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from velocity.cli.tables import age, table
from velocity.domain import ConfigError, Machine, PreviewError
from velocity.providers.base import META_OWNER, META_PREVIEW_ID, META_PROJECT_ID, META_USER_ID, OWNER_VALUE
from velocity.settings import Settings, load_settings

if TYPE_CHECKING:
    from velocity.fly.types import MachineJSON
    from velocity.providers.fly import FlyProvider

fly_app = typer.Typer(no_args_is_help=True, help="Fly.io: the emulator, a smoke test, the doctor, machines.")
machines_app = typer.Typer(no_args_is_help=True, help="Our machines on Fly: list, count, find stuck ones.")
fly_app.add_typer(machines_app, name="machines")

console = Console(highlight=False)
_AGE = re.compile(r"(\d+(?:\.\d+)?)([dhms])")
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_TRANSIENT = frozenset(
    {"creating", "starting", "stopping", "restarting", "suspending", "destroying", "updating", "replacing"}
)


# Columns printed whole in the machine tables: the ids, to be copied.
WHOLE = {"machine", "preview", "user"}


def parse_age(text: str) -> timedelta:
    """``1h``, ``90m``, ``1h30m``, ``2d``, ``45s``."""
    parts = _AGE.findall(text.strip().lower())
    if not parts or "".join(n + u for n, u in parts) != text.strip().lower():
        raise typer.BadParameter(f"{text!r} is not a duration such as 1h, 90m or 1h30m")
    return timedelta(seconds=sum(float(n) * _UNITS[u] for n, u in parts))


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(2) from None


@fly_app.command("fly-emulator")
def fly_emulator(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 4280,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    app_names: Annotated[list[str] | None, typer.Option("--app", help="Apps that exist (repeat).")] = None,
    backend: Annotated[str, typer.Option(help="What runs the machines: simulated or local.")] = "simulated",
    boot_seconds: Annotated[float, typer.Option(help="Simulated boot time.")] = 0.5,
    create_seconds: Annotated[float, typer.Option(help="Simulated create time.")] = 0.1,
    faults: Annotated[Path | None, typer.Option(help="JSON file of fault settings (docs/fly.md).")] = None,
    tokens: Annotated[
        list[str] | None, typer.Option("--token", help="Accepted tokens; any when unset.")
    ] = None,
    no_rate_limits: Annotated[bool, typer.Option(help="Do not answer 429 past Fly's limits.")] = False,
    agent_url: Annotated[
        str | None,
        typer.Option(help="Where every simulated machine's agent answers (with FLY_AGENT_ROUTE=emulator)."),
    ] = None,
) -> None:
    """Serve the Machines API emulator (FLY_API_BASE_URL=http://HOST:PORT points clients at it)."""
    import uvicorn

    from velocity.emulator import Faults, FlyEmulator
    from velocity.emulator.health import probe_http
    from velocity.providers.base import MachineProvider
    from velocity.providers.simulated import SimulatedLatencies, SimulatedProvider

    settings = _settings()
    try:
        chosen = Faults.from_file(faults) if faults else Faults()
    except ConfigError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(2) from None
    if no_rate_limits:
        chosen = replace(chosen, enforce_rate_limits=False)
    provider: MachineProvider
    if backend == "simulated":
        provider = SimulatedProvider(
            SimulatedLatencies(create=create_seconds, boot=boot_seconds), agent_url=agent_url
        )
        health = None
    elif backend == "local":
        from velocity.runtime import make_provider
        from velocity.settings import ProviderKind

        # Sandboxes of their own, apart from those of an orchestrator running locally on the same data dir.
        local = settings.model_copy(
            update={
                "preview_provider": ProviderKind.LOCAL,
                "velocity_data_dir": settings.data_dir / "fly-emulator",
            }
        )
        provider, health = make_provider(local), probe_http
    else:
        raise typer.BadParameter("--backend must be simulated or local")
    emulator = FlyEmulator(
        provider, apps=app_names or [settings.fly_app_name], tokens=tokens, faults=chosen, health=health
    )
    console.print(f"Fly Machines API emulator on http://{host}:{port} ({backend} machines)")
    uvicorn.run(emulator, host=host, port=port, log_level="warning")


@fly_app.command("smoke-test")
def smoke_test(
    timeout: Annotated[float, typer.Option(help="Seconds allowed for each wait.")] = 120.0,
    health: Annotated[
        str,
        typer.Option(
            help="How /health is checked: 'checks' (Fly runs it), 'direct' (call the agent over the private "
            "network) or 'auto' (direct when running on Fly)."
        ),
    ] = "auto",
    keep: Annotated[bool, typer.Option(help="Leave the machine running for inspection.")] = False,
) -> None:
    """Create a machine from the configured image, wait until it serves /health, destroy it."""
    from velocity.fly.smoke import SmokeTest, smoke_spec

    if health not in ("auto", "checks", "direct"):
        raise typer.BadParameter("--health must be auto, checks or direct")
    # Fly sets FLY_MACHINE_ID in every machine: there the private network reaches the agent.
    direct = health == "direct" or (health == "auto" and "FLY_MACHINE_ID" in os.environ)
    settings = _settings()

    async def run() -> bool:
        provider = _fly_provider(settings)
        try:
            smoke = SmokeTest(provider, provider.client, timeout=timeout, direct=direct, keep=keep)
            await smoke.run(smoke_spec(settings))
        finally:
            await provider.aclose()
        total = sum(step.seconds for step in smoke.steps)
        for step in smoke.steps:
            mark = "[green]ok[/green]  " if step.ok else "[red]FAIL[/red]"
            console.print(f"{mark} {step.name:<20} {step.seconds:7.2f}s  {step.detail}")
        console.print(f"{'passed' if smoke.passed else 'FAILED'} in {total:.2f}s")
        return smoke.passed

    if not asyncio.run(run()):
        raise typer.Exit(1)


@fly_app.command("doctor")
def doctor() -> None:
    """Check settings, token, app and machine access; say how to fix each problem."""
    from velocity.deploy import PREVIEW_TEMPLATE_PATH, load_machine_template
    from velocity.fly.client import FlyClient
    from velocity.fly.doctor import check_fly, check_settings

    settings = _settings()
    template_path = Path(PREVIEW_TEMPLATE_PATH)
    template = load_machine_template(template_path) if template_path.is_file() else None
    checks = check_settings(settings, template)

    async def remote() -> None:
        client = FlyClient.from_settings(settings)
        try:
            checks.extend(await check_fly(settings, client))
        finally:
            await client.aclose()

    if settings.fly_api_token is not None and settings.fly_api_token.get_secret_value().strip():
        asyncio.run(remote())
    for check in checks:
        mark = (
            "[green]ok[/green]  "
            if check.ok
            else ("[yellow]warn[/yellow]" if check.warning else "[red]FAIL[/red]")
        )
        console.print(f"{mark} {check.name:<24} {check.detail}")
        if check.fix and not check.ok:
            console.print(f"     {'':<24} [dim]fix: {check.fix}[/dim]")
    failed = [check for check in checks if check.failed]
    console.print(f"{len(failed)} problem(s)" if failed else "all good")
    if failed:
        raise typer.Exit(1)


@machines_app.command("ls")
def machines_ls(
    everything: Annotated[
        bool, typer.Option("--all", help="Every machine of the app, not only ours.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per machine.")] = False,
) -> None:
    """Our machines: preview, user, project, state, region and age."""
    machines = _list(everything)
    if as_json:
        for machine in machines:
            console.print_json(json.dumps(_row(machine)))
        return
    keys = ("id", "preview", "user", "project", "state", "region", "age")
    rows = [[str(_row(machine)[key]) for key in keys] for machine in machines]
    headers = ["machine", "preview", "user", "project", "state", "region", "age"]
    console.print(table(headers, rows, whole=WHOLE))


@machines_app.command("count")
def machines_count(
    everything: Annotated[
        bool, typer.Option("--all", help="Every machine of the app, not only ours.")
    ] = False,
) -> None:
    """How many of our machines there are, by state."""
    machines = _list(everything)
    by_state = Counter(str(machine.state) for machine in machines)
    console.print(f"{len(machines)} " + " ".join(f"{state}={n}" for state, n in sorted(by_state.items())))


@machines_app.command("stuck")
def machines_stuck(
    older_than: Annotated[str, typer.Option(help="Age past which a machine is stuck: 1h, 90m...")] = "1h",
    wedged_after: Annotated[
        str, typer.Option(help="Time in a transient state past which it is wedged.")
    ] = "5m",
    destroy: Annotated[bool, typer.Option(help="Destroy them.")] = False,
) -> None:
    """Our machines older than --older-than (no preview lives that long), or wedged in a transient state
    (starting, stopping, destroying... for longer than --wedged-after); --destroy removes them."""
    limit, wedged = parse_age(older_than), parse_age(wedged_after)
    settings = _settings()

    async def run() -> int:
        provider = _fly_provider(settings)
        failures = 0
        try:
            now = datetime.now(UTC)
            found = await provider.client.list_machines(metadata={META_OWNER: OWNER_VALUE})
            stuck = [
                (m, why)
                for m in found
                if (why := stuck_reason(m, now, older_than=limit, wedged_after=wedged))
            ]
            rows = []
            for machine, why in stuck:
                metadata = machine.get("config", {}).get("metadata") or {}
                row = [
                    machine["id"],
                    metadata.get(META_PREVIEW_ID, "-"),
                    metadata.get(META_USER_ID, "-"),
                    str(machine.get("state")),
                    why,
                ]
                if destroy:
                    try:
                        await provider.destroy(machine["id"], force=True)
                        row.append("[green]yes[/green]")
                    except PreviewError as exc:
                        failures += 1
                        row.append(f"[red]no: {exc.message}[/red]")
                rows.append(row)
            if stuck:
                headers = ["machine", "preview", "user", "state", "why", *(["destroyed"] if destroy else [])]
                console.print(table(headers, rows, whole=WHOLE))
            summary = f"{len(stuck)} machine(s) older than {older_than} or wedged for {wedged_after}"
            if destroy:
                summary += f"; {len(stuck) - failures} destroyed"
            console.print(summary)
        finally:
            await provider.aclose()
        return failures

    try:
        failures = asyncio.run(run())
    except PreviewError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(1) from None
    if failures:
        raise typer.Exit(1)


def stuck_reason(
    machine: MachineJSON, now: datetime, *, older_than: timedelta, wedged_after: timedelta
) -> str | None:
    """Why a machine of ours is stuck, or ``None``. Fly calls a machine wedged after minutes in a
    transient state (docs: 5 min for starting, stopping, restarting, destroying; 10 for updating)."""
    from velocity.providers.fly import parse_time

    if machine.get("state") == "destroyed":
        return None
    lived = now - parse_time(machine.get("created_at"))
    if lived > older_than:
        return f"age {age(lived)}"
    state = machine.get("state", "")
    in_state = now - parse_time(machine.get("updated_at") or machine.get("created_at"))
    limit = wedged_after * 2 if state in ("updating", "replacing") else wedged_after
    if state in _TRANSIENT and in_state > limit:
        return f"{state} for {age(in_state)}"
    return None


def _fly_provider(settings: Settings) -> FlyProvider:
    from velocity.providers.fly import FlyProvider

    try:
        return FlyProvider.from_settings(settings)
    except ConfigError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(2) from None


def _list(everything: bool) -> list[Machine]:
    settings = _settings()

    async def run() -> list[Machine]:
        provider = _fly_provider(settings)
        try:
            return await provider.list(metadata=None if everything else {META_OWNER: OWNER_VALUE})
        finally:
            await provider.aclose()

    try:
        return asyncio.run(run())
    except PreviewError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(1) from None


def _row(machine: Machine) -> dict[str, str]:
    return {
        "id": machine.id,
        "preview": machine.metadata.get(META_PREVIEW_ID, "-"),
        "user": machine.metadata.get(META_USER_ID, "-"),
        "project": machine.metadata.get(META_PROJECT_ID, "-"),
        "state": str(machine.state),
        "region": machine.region,
        "age": age(datetime.now(UTC) - machine.created_at),
        "created_at": machine.created_at.isoformat(),
    }
