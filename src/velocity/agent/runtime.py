"""The agent once its install runs: supervise, serve, and stop cleanly on SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from velocity.agent.app import AgentApp, ClaimHandler
from velocity.agent.boot import Boot
from velocity.agent.claim import Claim, snapshot_url, swap_in
from velocity.agent.config import AgentConfig
from velocity.agent.context import AgentContext, Extension
from velocity.agent.exits import ExitCode
from velocity.agent.logs import LogBuffer
from velocity.agent.sealing import SealReport
from velocity.agent.state import AgentState, Status
from velocity.agent.supervisor import Supervisor
from velocity.agent.workspace import Workspace
from velocity.domain.errors import Conflict, PreviewError


async def run(
    config: AgentConfig, logs: LogBuffer, boot: Boot, started: float, extensions: Sequence[Extension] = ()
) -> ExitCode:
    """Serve and supervise until the preview fails or a signal stops the agent; ``extensions`` run
    beside the server (see ``context``)."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    status = Status(config.project_id, started=started, pooled=config.pooled)
    status.timings.fetch_ms = boot.fetch_ms
    supervisor = Supervisor(
        config.workspace,
        status,
        logs,
        env=os.environ,
        dev_port=config.dev_port,
        install=boot.install,
        install_started=boot.install_started,
        seal=SealReport(config.seal_fd),
        user=config.user,
    )
    if boot.error is not None:
        status.fail(boot.error)
    else:
        status.set_state(AgentState.INSTALLING)
    supervising = asyncio.create_task(supervisor.run()) if boot.error is None else None

    from velocity.agent.server import AgentServer  # the web stack, while npm runs

    app = AgentApp(status, logs, origin_secret=config.origin_secret)
    server = AgentServer(app, socket_path=config.socket, port=config.port, listen_fd=config.listen_fd)
    try:
        await server.start()
    except PreviewError as exc:
        logs.agent(f"failed: {exc.message}")
        await _cancel(supervising)
        return ExitCode.FAILED
    status.timings.serve_ms = Status.elapsed_ms(started)
    logs.agent(f"serving on {config.listen_on} after {status.timings.serve_ms:.0f} ms")
    loader = asyncio.create_task(app.load_proxy())
    running: list[asyncio.Task[Any]] = []

    def start_extensions(config: AgentConfig) -> None:
        context = AgentContext(config, status, logs, Workspace(config.workspace), supervisor)
        running.extend(asyncio.create_task(_guarded(extension, context)) for extension in extensions)

    if config.pooled:
        # A pooled machine syncs nothing until it knows its preview.
        app.on_claim(_claimer(config, boot, status, logs, app, supervisor, running, start_extensions))
    else:
        start_extensions(config)

    code = await _until_done(supervising, stopping)
    if code is not ExitCode.OK and not stopping.is_set():
        # Keep answering /health for a moment, so that a poller learns why before the machine stops.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(config.linger_seconds):
                await stopping.wait()
    if stopping.is_set():
        code = ExitCode.OK  # asked to stop: /health has said why the preview failed, if it did
    logs.agent(f"stopping (exit code {int(code)})")
    status.close()
    # Together: Fly sends SIGKILL 5 s after SIGTERM by default, and each may take a few seconds.
    await asyncio.gather(_cancel(supervising), server.stop())
    for task in (loader, *running):
        await _cancel(task)
    await app.aclose()
    return code


def _claimer(
    config: AgentConfig,
    boot: Boot,
    status: Status,
    logs: LogBuffer,
    app: AgentApp,
    supervisor: Supervisor,
    running: list[asyncio.Task[Any]],
    start_extensions: Callable[[AgentConfig], None],
) -> ClaimHandler:
    """The handler of the one claim a pooled agent takes (``claim``)."""
    lock = asyncio.Lock()

    async def take(body: bytes) -> dict[str, Any]:
        claim = Claim.parse(body)
        async with lock:
            if not status.pooled:
                raise Conflict("this machine was claimed already: it serves one preview, once")
            if status.state is not AgentState.READY:
                raise Conflict(f"this machine is not ready to be claimed (state: {status.state})")
            # A pooled agent was configured with its template's URL, and booted it (``config``).
            assert config.snapshot_url is not None and boot.template is not None
            url = snapshot_url(config.snapshot_url, claim.project_id)
            swapped = await asyncio.to_thread(swap_in, claim, url, config.workspace, boot.template)
            # Whatever happens next, this machine has the user's files: it is pooled no more.
            status.pooled = False
            os.environ.update(claim.environment)
            app.set_origin_secret(claim.origin_secret)
            status.project_id = claim.project_id
            claimed = replace(
                config,
                project_id=claim.project_id,
                snapshot_url=url,
                token=claim.token,
                origin_secret=claim.origin_secret,
                pooled=False,
            )
            status.timings.fetch_ms = swapped.fetch_ms
            restart = swapped.dependencies_changed or swapped.config_changed
            how = (
                "installing what differs"
                if swapped.dependencies_changed
                else "restarting the dev server for its configuration"
                if swapped.config_changed
                else "the dev server kept"
            )
            logs.agent(
                f"claimed by preview {claim.preview_id} of project {claim.project_id}: "
                f"{swapped.members} entries in, {swapped.removed} of the template's files out, {how}"
            )
            if restart:
                status.set_state(AgentState.STARTING, f"claimed: {how}")
                running.append(
                    asyncio.create_task(supervisor.restart(reinstall=swapped.dependencies_changed))
                )
            start_extensions(claimed)
            status.notify()
            return {
                "state": status.state.value,
                "dependencies_changed": swapped.dependencies_changed,
                "restarted": restart,
            }

    return take


async def _until_done(supervising: asyncio.Task[ExitCode] | None, stopping: asyncio.Event) -> ExitCode:
    """The supervisor's exit code if it gives up, OK if a signal asks the agent to stop first."""
    if supervising is None:
        return ExitCode.FAILED
    stop = asyncio.create_task(stopping.wait())
    await asyncio.wait({supervising, stop}, return_when=asyncio.FIRST_COMPLETED)
    await _cancel(stop)
    if supervising.done():
        return supervising.result()
    return ExitCode.OK


async def _guarded(extension: Extension, context: AgentContext) -> None:
    """An extension that fails is reported; the preview it serves keeps running."""
    try:
        await extension(context)
    except Exception as exc:
        context.logs.agent(f"{getattr(extension, '__name__', 'an extension')} stopped: {exc!r}")


async def _cancel(task: asyncio.Task[Any] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
