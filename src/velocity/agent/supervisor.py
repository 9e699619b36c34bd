"""Install the dependencies, then keep the dev server running, and decide when to give up.

Policy: a dev server that exits is restarted after a back-off, at most ``MAX_RESTARTS`` times in a row
(a run that stayed up for ``STABLE_SECONDS`` resets the count); one more crash fails the preview. A dev
server that dies of SIGKILL is not restarted: in a machine with a memory limit that is the OOM killer,
and a restart would only be killed again, so the agent fails at once and exits with its own code.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from velocity.agent import hmr, listening, managers
from velocity.agent.children import Child
from velocity.agent.commands import (
    Command,
    dev_command,
    dev_program,
    install_command,
    nothing_to_install,
    read_package,
)
from velocity.agent.exits import ExitCode
from velocity.agent.identity import UserCode
from velocity.agent.logs import LogBuffer
from velocity.agent.probe import answers, free_port
from velocity.agent.processes import start
from velocity.agent.sealing import SealReport
from velocity.agent.state import AgentState, DevServerState, Status
from velocity.domain.errors import AgentError, PreviewError
from velocity.domain.memory import more_memory

MAX_RESTARTS = 3
STABLE_SECONDS = 60.0
BACKOFF_SECONDS = (0.25, 1.0, 3.0)
READY_TIMEOUT_SECONDS = 120.0
# A dev server listening elsewhere for this long, and not on its port, is not coming to its port.
ELSEWHERE_SECONDS = 10.0
PROBE_INTERVAL_SECONDS = 0.025


def killed_by_sigkill(status: int) -> bool:
    # -9 when the leader itself was killed; 137 (128 + 9) when npm or a shell reports a killed child.
    return status in (-signal.SIGKILL, 128 + signal.SIGKILL)


def describe_exit(status: int) -> str:
    if status < 0:
        return f"was killed by {signal.Signals(-status).name}"
    return f"exited with status {status}"


class Supervisor:
    """Owns the install and dev server processes; ``run`` returns the agent's exit code once it fails."""

    def __init__(
        self,
        workspace: Path,
        status: Status,
        logs: LogBuffer,
        *,
        env: Mapping[str, str],
        dev_port: int | None,
        install: subprocess.Popen[bytes] | None = None,
        install_started: float = 0.0,
        seal: SealReport | None = None,
        user: UserCode | None = None,
    ) -> None:
        self._workspace = workspace
        self._status = status
        self._logs = logs
        self._env = env
        self._fixed_port = dev_port
        self._install = install  # started already, during boot
        self._install_started = install_started
        self._seal = seal or SealReport(None)
        self._user = user
        self._installing: Child | None = None
        self._dev: Child | None = None
        self._restart = asyncio.Event()
        self._reinstall = False
        self._generation = 0  # dev server starts so far

    def start_install(self) -> None:
        """Spawn the dependency install; ``run`` waits for it."""
        self._status.set_state(AgentState.INSTALLING)
        command = install_command(self._workspace, self._env)
        if command is None:
            self._logs.agent(nothing_to_install(self._workspace))
            return
        self._install_started = time.monotonic()
        managers.prepare(command.manager, self._workspace)
        self._install = self._start(command, f"install with {command.manager}")

    async def run(self) -> ExitCode:
        """Finish the install, then supervise the dev server until the preview fails or this is cancelled."""
        try:
            await self._finish_install()
            return await self._supervise()
        except PreviewError as exc:
            self._fail(exc.message)
            return ExitCode.FAILED
        finally:
            await self._stop_children()

    async def restart(self, *, reinstall: bool = False, within: float = READY_TIMEOUT_SECONDS) -> bool:
        """Restart the dev server (after reinstalling the dependencies if asked) and wait until it is
        ready again; False if it is not ready ``within`` seconds. This is the seam for live file sync:
        after writing package.json, call ``restart(reinstall=True)``."""
        generation = self._generation
        self._reinstall = self._reinstall or reinstall
        self._restart.set()
        return await self._status.wait_for(
            lambda status: self._generation > generation and status.state is AgentState.READY, within
        )

    async def _finish_install(self, *, again: bool = True) -> None:
        if self._install is None:
            return
        process, self._install = self._install, None
        child = self._installing = await Child.adopt(process, "install", self._logs, stream="install")
        code = await child.wait()
        self._installing = None
        self._status.timings.install_ms = Status.elapsed_ms(self._install_started)
        if code != 0 and again and self._cache_was_damaged():
            # npm checks every package it takes from its cache against the lockfile's integrity and
            # drops one that fails, but then gives up instead of fetching it again; once more does.
            self._logs.agent("npm found a damaged package in its cache and dropped it; installing again")
            self.start_install()
            await self._finish_install(again=False)
            return
        package = read_package(self._workspace)
        manager = managers.detect(self._workspace, package) if package is not None else None
        if code != 0:
            tool = manager.name if manager is not None else "npm"
            why = f": SIGKILL, {self._out_of_memory()}" if killed_by_sigkill(code) else self._last_output()
            raise AgentError(f"installing the dependencies failed: {tool} {describe_exit(code)}{why}")
        self._logs.agent(f"dependencies installed in {self._status.timings.install_ms:.0f} ms")
        if manager is not None and package is not None:
            try:
                managers.record_install(manager, self._workspace, package)
            except OSError as exc:
                self._logs.agent(f"could not record the install ({exc}); the next start installs again")
        await self._seal.write(self._workspace)

    async def _watch_hmr(self, port: int) -> None:
        """Check the dev server's hot-reload channel now and every ``hmr.CHECK_SECONDS``; report
        each change in ``/health`` and the log."""
        dev = self._status.dev_server
        next_js = dev_program(self._workspace) == "next"
        while True:
            state, detail = await hmr.check(port, next_js=next_js)
            if (state, detail) != (dev.hmr, dev.hmr_detail):
                dev.hmr, dev.hmr_detail = state, detail
                self._logs.agent(f"hot reload: {state}" + (f" ({detail})" if detail else ""))
                self._status.notify()
            await asyncio.sleep(hmr.CHECK_SECONDS)

    def _out_of_memory(self) -> str:
        """Why a process of the project died of SIGKILL, and what to set."""
        memory = self._env.get("CONTAINER_MEMORY_MB", "").strip()
        return f"most likely from the out-of-memory killer: {more_memory(int(memory) if memory.isdigit() else None)}"

    def _start(self, command: Command, label: str) -> subprocess.Popen[bytes]:
        return start(
            command.argv, cwd=self._workspace, env=command.env, logs=self._logs, label=label, user=self._user
        )

    def _cache_was_damaged(self) -> bool:
        output = [line.line for line in self._logs.tail(50) if line.stream != "agent"]
        return any("EINTEGRITY" in line or ("ENOENT" in line and "_cacache" in line) for line in output)

    async def _supervise(self) -> ExitCode:
        crashes = 0
        while True:
            if self._reinstall:
                self._reinstall = False
                self.start_install()
                await self._finish_install()
            self._restart.clear()
            started = time.monotonic()
            outcome = await self._run_dev_server()
            if outcome is None:  # a restart was asked for
                continue
            if killed_by_sigkill(outcome):
                self._fail(f"the dev server {describe_exit(outcome)}: SIGKILL, {self._out_of_memory()}")
                return ExitCode.DEV_SERVER_KILLED
            crashes = 1 if time.monotonic() - started >= STABLE_SECONDS else crashes + 1
            if crashes > MAX_RESTARTS:
                self._fail(
                    f"the dev server {describe_exit(outcome)}, {crashes} times in a row{self._last_output()}"
                )
                return ExitCode.FAILED
            delay = BACKOFF_SECONDS[min(crashes, len(BACKOFF_SECONDS)) - 1]
            self._status.dev_server.state = DevServerState.RESTARTING
            self._status.dev_server.restarts += 1
            self._status.set_state(
                AgentState.STARTING, f"the dev server {describe_exit(outcome)}; restarting"
            )
            self._logs.agent(f"the dev server {describe_exit(outcome)}; restarting in {delay} s")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._restart.wait()

    async def _run_dev_server(self) -> int | None:
        """Start the dev server and wait until it exits (its status) or a restart is asked for (None)."""
        dev = self._status.dev_server
        if self._fixed_port is None or dev.port is None:
            # A fresh port for each start when the agent picks: the last one may have been taken.
            dev.port = self._fixed_port or free_port()
        command = dev_command(self._workspace, dev.port, self._env)
        self._status.set_state(AgentState.STARTING)
        dev.state = DevServerState.STARTING
        dev.hmr, dev.hmr_detail = "unknown", None
        started = time.monotonic()
        process = self._start(command, "dev server")
        child = self._dev = await Child.adopt(process, "dev server", self._logs)
        self._generation += 1
        dev.pid, dev.exit_code = child.pid, None
        self._status.notify()
        restart: asyncio.Future[Any] = asyncio.ensure_future(self._restart.wait())
        try:
            if await self._until_ready(child, dev.port, restart):
                self._status.timings.dev_server_ms = Status.elapsed_ms(started)
                dev.state = DevServerState.RUNNING
                took = self._status.timings.dev_server_ms
                self._logs.agent(f"the dev server answers on port {dev.port} after {took:.0f} ms")
                self._status.set_state(AgentState.READY)
                watching = asyncio.create_task(self._watch_hmr(dev.port), name="agent-hmr")
                try:
                    await asyncio.wait(_either(child, restart), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    watching.cancel()
                    await asyncio.wait([watching])
        finally:
            restart.cancel()
        self._dev = None
        if not child.exited.done():
            self._logs.agent("restarting the dev server")
            await child.stop()
            return None
        code = await child.wait()
        dev.exit_code, dev.pid = code, None
        self._status.notify()
        return code

    async def _until_ready(self, child: Child, port: int, restart: asyncio.Future[Any]) -> bool:
        """Poll the port until the dev server answers; False if it exits or a restart comes first.
        Polling is the one way to learn that an arbitrary program is serving."""
        began = time.monotonic()
        while not (child.exited.done() or restart.done()):
            if await answers(port):
                return True
            waited = time.monotonic() - began
            if waited > ELSEWHERE_SECONDS and (elsewhere := listening.others(besides=port)):
                raise AgentError(
                    f"the dev server listens on {', '.join(elsewhere)}, not on 127.0.0.1:{port} as its "
                    f"PORT and HOST say: make the dev script use them, or pass the port "
                    f'(docs/architecture.md, "Dev servers")'
                )
            if waited > READY_TIMEOUT_SECONDS:
                where = listening.others()
                raise AgentError(
                    f"the dev server did not answer on 127.0.0.1:{port} within {READY_TIMEOUT_SECONDS:.0f} s"
                    + (f"; it listens on {', '.join(where)}" if where else ", and listens on no port")
                )
            await asyncio.wait(_either(child, restart), timeout=PROBE_INTERVAL_SECONDS)
        return False

    def _fail(self, detail: str) -> None:
        self._status.dev_server.state = DevServerState.STOPPED
        self._status.fail(detail)
        self._logs.agent(f"failed: {detail}")

    def _last_output(self) -> str:
        lines = [line for line in self._logs.tail(50) if line.stream != "agent" and line.line.strip()]
        return f"; last output: {lines[-1].line.strip()[:300]}" if lines else ""

    async def _stop_children(self) -> None:
        if self._install is not None:  # never adopted: the run was cancelled first
            self._installing = await Child.adopt(self._install, "install", self._logs, stream="install")
            self._install = None
        children = [child for child in (self._installing, self._dev) if child is not None]
        self._installing = self._dev = None
        await asyncio.gather(*(child.stop() for child in children), return_exceptions=True)
        if children:
            self._status.dev_server.state = DevServerState.STOPPED
            self._status.dev_server.pid = None


def _either(child: Child, restart: asyncio.Future[Any]) -> list[asyncio.Future[Any]]:
    return [child.exited, restart]
