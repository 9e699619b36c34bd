"""The agent as the machine runs it: a real process on a unix socket, fed by a real snapshot server."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import tarfile
from collections.abc import Callable, Mapping
from pathlib import Path

import httpx

PROJECT = Path(__file__).parent / "project"
TOKEN = "test-agent-token"


def tarball(files: Mapping[str, bytes], *, links: Mapping[str, str] | None = None) -> bytes:
    """A gzip tarball of ``files`` (relative names, any names) and symlinks ``links`` (name → target)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            archive.addfile(info)
    return buffer.getvalue()


def project_files(**overrides: bytes) -> dict[str, bytes]:
    files = {path.name: path.read_bytes() for path in PROJECT.iterdir() if path.is_file()}
    files.update(overrides)
    return files


class SnapshotServer:
    """Answers ``GET /snapshot.tgz`` with a tarball, only to the agent's bearer token (``token``);
    other paths answer what ``routes`` maps them to (token, tarball)."""

    def __init__(self) -> None:
        self.token = TOKEN
        self.body = tarball(project_files())
        self.routes: dict[str, tuple[str, bytes]] = {}
        self.paths: list[str] = []
        self.authorizations: list[str] = []
        self.url = ""
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/snapshot.tgz"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in head[1:] if ": " in line)
        authorization = headers.get("Authorization", "")
        self.authorizations.append(authorization)
        path = head[0].split(" ")[1] if " " in head[0] else ""
        self.paths.append(path)
        token, served = self.routes.get(path, (self.token, self.body))
        if authorization != f"Bearer {token}":
            status, body, kind = "401 Unauthorized", b"bad token\n", "text/plain"
        else:
            status, body, kind = "200 OK", served, "application/gzip"
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()


class Agent:
    """One ``python -m velocity.agent`` process; its stdout is read as it comes."""

    def __init__(self, process: asyncio.subprocess.Process, socket_path: str, workspace: Path) -> None:
        self.process = process
        self.socket_path = socket_path
        self.workspace = workspace
        self.lines: list[str] = []
        self.stderr = b""
        self._new_line = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())
        self._errors = asyncio.create_task(self._read_errors())
        self.client = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=socket_path), base_url="http://agent", timeout=60
        )

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            async with self._new_line:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._new_line.notify_all()
        async with self._new_line:
            self._new_line.notify_all()

    async def _read_errors(self) -> None:
        assert self.process.stderr is not None
        self.stderr = await self.process.stderr.read()

    async def wait_for_line(self, predicate: Callable[[str], bool], within: float = 30) -> str:
        """The first stdout line for which ``predicate`` holds, waiting for it to be printed."""
        async with asyncio.timeout(within), self._new_line:
            while True:
                for line in self.lines:
                    if predicate(line):
                        return line
                if self._reader.done():
                    await self._errors
                    printed = "\n".join(self.lines)
                    raise AssertionError(
                        f"the agent's stdout closed; it printed:\n{printed}\n{self.stderr.decode()}"
                    )
                await self._new_line.wait()

    async def serving(self) -> None:
        await self.wait_for_line(lambda line: line.startswith("agent: serving on"))

    async def health(self, query: str = "") -> httpx.Response:
        return await self.client.get(f"/health{query}")

    async def ready(self) -> dict[str, object]:
        await self.serving()
        response = await self.health("?wait=ready&timeout=60")
        body: dict[str, object] = response.json()
        assert body["state"] == "ready", body
        return body

    async def exit_code(self, within: float = 30) -> int:
        async with asyncio.timeout(within):
            code = await self.process.wait()
            await asyncio.gather(self._reader, self._errors)
        return code

    async def close(self) -> None:
        await self.client.aclose()
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await self.exit_code(within=15)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        for task in (self._reader, self._errors):
            task.cancel()
        await asyncio.gather(self._reader, self._errors, return_exceptions=True)


async def gone(pid: int, within: float = 10) -> bool:
    """Wait until no process has ``pid`` (a zombie nobody has reaped yet counts as gone)."""
    async with asyncio.timeout(within):
        while True:
            try:
                os.kill(pid, 0)
                with open(f"/proc/{pid}/stat") as stat:  # procfs answers at once
                    if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                        return True
            except (ProcessLookupError, FileNotFoundError):
                return True
            await asyncio.sleep(0.02)


AgentFactory = Callable[..., contextlib.AbstractAsyncContextManager[Agent]]
