"""One child process under the event loop: its exit as a future, its output in the log, and stopping it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from typing import IO

from velocity.agent.logs import MAX_LINE, LogBuffer, Stream
from velocity.agent.processes import signal_group

STOP_GRACE_SECONDS = 3.0
_PUMP_DRAIN_SECONDS = 1.0


class Child:
    """A started process adopted by the event loop; ``adopt`` builds one."""

    def __init__(self, process: subprocess.Popen[bytes], label: str, exited: asyncio.Future[int]) -> None:
        self.process = process
        self.label = label
        self.exited = exited  # resolves to the exit status (negative: killed by that signal)
        self._pumps: list[asyncio.Task[None]] = []
        self._transports: list[asyncio.BaseTransport] = []

    @classmethod
    async def adopt(
        cls, process: subprocess.Popen[bytes], label: str, logs: LogBuffer, *, stream: Stream | None = None
    ) -> Child:
        """Watch ``process``; its output goes to ``logs`` as stdout and stderr, or all as ``stream``."""
        child = cls(process, label, _watch_exit(process))
        loop = asyncio.get_running_loop()
        pipes: list[tuple[IO[bytes] | None, Stream]] = [
            (process.stdout, stream or "stdout"),
            (process.stderr, stream or "stderr"),
        ]
        for pipe, stream in pipes:
            assert pipe is not None  # started with both on pipes
            reader = asyncio.StreamReader()
            protocol = asyncio.StreamReaderProtocol(reader)
            transport, _ = await loop.connect_read_pipe(lambda: protocol, pipe)  # noqa: B023 - called at once
            child._transports.append(transport)
            child._pumps.append(asyncio.create_task(_pump(reader, stream, logs)))
        return child

    @property
    def pid(self) -> int:
        return self.process.pid

    async def wait(self) -> int:
        """Wait for the leader to exit, then clear out its group and finish reading its output."""
        status = await asyncio.shield(self.exited)
        await self._cleanup()
        return status

    async def stop(self, grace: float = STOP_GRACE_SECONDS) -> int:
        """SIGTERM to the group; SIGKILL once ``grace`` seconds have passed."""
        signal_group(self.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(grace):
                status = await asyncio.shield(self.exited)
        except TimeoutError:
            signal_group(self.pid, signal.SIGKILL)
            status = await asyncio.shield(self.exited)
        await self._cleanup()
        return status

    async def _cleanup(self) -> None:
        # Helpers outliving the leader would keep the pipes (and the port) open.
        signal_group(self.pid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_PUMP_DRAIN_SECONDS):
                await asyncio.gather(*self._pumps, return_exceptions=True)
        for task in self._pumps:
            task.cancel()
        for transport in self._transports:
            transport.close()


def _watch_exit(process: subprocess.Popen[bytes]) -> asyncio.Future[int]:
    """A future for the exit status, woken by a pidfd where the kernel has them (Linux 5.3+); elsewhere
    a thread waits. The exit is reaped here and nowhere else."""
    loop = asyncio.get_running_loop()
    try:
        pidfd = os.pidfd_open(process.pid)
    except (AttributeError, OSError):
        return asyncio.ensure_future(asyncio.to_thread(process.wait))
    exited: asyncio.Future[int] = loop.create_future()

    def reap() -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        if not exited.done():
            exited.set_result(process.wait())

    loop.add_reader(pidfd, reap)
    return exited


async def _pump(reader: asyncio.StreamReader, stream: Stream, logs: LogBuffer) -> None:
    """Copy a child's output into ``logs`` line by line until the pipe closes."""
    pending = b""
    while chunk := await reader.read(65536):
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            logs.add(stream, line.decode(errors="replace"))
        if len(pending) > MAX_LINE:
            logs.add(stream, pending.decode(errors="replace"))
            pending = b""
    if pending:
        logs.add(stream, pending.decode(errors="replace"))
