"""A real orchestrator on a loopback port with real bubblewrap sandboxes, and ways to talk to it; and
the Fly Machines API emulator on another, its machines local sandboxes, for ``PREVIEW_PROVIDER=fly``."""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Generator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import uvicorn
from websockets.asyncio.client import ClientConnection, connect

from velocity.emulator import FlyEmulator
from velocity.emulator.fleet import EmulatedMachine
from velocity.emulator.health import probe_http
from velocity.projects import pack_directory
from velocity.providers.local import LocalSandboxProvider, SandboxOptions, disks
from velocity.server import Running, running
from velocity.settings import Settings

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "react-vite"
PROJECTS = Path(__file__).resolve().parent / "projects"


@dataclass
class Live:
    """A running orchestrator, seen from outside: its port, an API client, a user token."""

    running: Running
    api: httpx.AsyncClient
    token: str

    @property
    def port(self) -> int:
        return self.running.settings.velocity_port

    @property
    def settings(self) -> Settings:
        return self.running.settings

    async def import_project(self, directory: Path, project_id: str, **query: str) -> None:
        snapshot = pack_directory(directory, max_bytes=self.settings.max_project_bytes)
        response = await self.api.put(
            f"/v1/projects/{project_id}",
            content=snapshot.data,
            params=query,
            headers={"content-type": "application/gzip"},
        )
        response.raise_for_status()

    async def create(self, project_id: str) -> dict[str, Any]:
        response = await self.api.post("/v1/previews", json={"project_id": project_id})
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def settled(self, preview_id: str, timeout: float = 90) -> dict[str, Any]:
        await self.running.runtime.previews.settled(preview_id, timeout=timeout)
        response = await self.api.get(f"/v1/previews/{preview_id}")
        body: dict[str, Any] = response.json()
        return body

    async def ended(self, preview_id: str, timeout: float = 60) -> dict[str, Any]:
        """The preview once it has stopped or failed on its own."""
        await self.running.runtime.previews.ended(preview_id, timeout=timeout)
        body: dict[str, Any] = (await self.api.get(f"/v1/previews/{preview_id}")).json()
        return body

    async def started(self, directory: Path, project_id: str) -> dict[str, Any]:
        """Import ``directory`` as ``project_id`` and return its preview once ready."""
        await self.import_project(directory, project_id)
        ready = await self.settled((await self.create(project_id))["id"])
        assert ready["state"] == "ready", ready["failure_reason"]
        return ready

    async def ask(self, preview_id: str, endpoint: str, **query: Any) -> dict[str, Any]:
        """GET ``endpoint`` of a test project's dev server (it answers JSON) and return the answer."""
        response = await self.fetch(
            preview_id, f"{endpoint}?{urlencode(query, doseq=True)}" if query else endpoint
        )
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    @asynccontextmanager
    async def as_user(self, user_id: str) -> AsyncIterator[Live]:
        """The same orchestrator, seen by another user."""
        token = self.running.runtime.issuer.mint_user(user_id)
        async with httpx.AsyncClient(
            base_url=str(self.api.base_url), headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as api:
            yield Live(self.running, api, token)

    def host(self, preview_id: str) -> str:
        return f"{preview_id}.{self.settings.preview_domain}:{self.port}"

    async def fetch(self, preview_id: str, path: str = "/") -> httpx.Response:
        """GET a path of the preview through the router, as a browser would."""
        # The owner's token opens a private preview, as the signed link does for a browser.
        headers = {"host": self.host(preview_id), "authorization": f"Bearer {self.token}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=30) as client:
            return await client.get(path, headers=headers)

    @asynccontextmanager
    async def websocket(
        self, preview_id: str, path: str, *, subprotocol: str
    ) -> AsyncIterator[ClientConnection]:
        """A websocket to the preview through the router (the host name is ours, the socket loopback)."""
        sock = socket.create_connection(("127.0.0.1", self.port))
        uri = f"ws://{self.host(preview_id)}{path}"
        owner = {"authorization": f"Bearer {self.token}"}
        async with connect(
            uri,
            sock=sock,
            subprotocols=[subprotocol],
            additional_headers=owner,
            open_timeout=20,  # type: ignore[list-item]
        ) as ws:
            yield ws


@asynccontextmanager
async def live_orchestrator(
    *, npm_cache: Path, data: Path | None = None, keep_previews: bool = False, **overrides: Any
) -> AsyncIterator[Live]:
    """An orchestrator on 127.0.0.1:<free port> with its own data directory (short, for socket paths).

    With ``data`` the directory is the caller's and survives; ``keep_previews`` leaves the sandboxes
    running on exit, as a crashed or restarted orchestrator would.
    """
    owned = data is None
    data = data or Path(tempfile.mkdtemp(prefix="vp-"))
    settings = Settings(
        velocity_data_dir=data,
        velocity_port=0,
        local_npm_cache_dir=npm_cache,
        local_modules_cache_dir=modules_cache(npm_cache),
        _env_file=None,  # type: ignore[call-arg]
        **overrides,
    )
    try:
        async with running(settings, stop_previews=not keep_previews) as orchestrator:
            token = orchestrator.runtime.issuer.mint_user("e2e-user")
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{orchestrator.settings.velocity_port}",
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            ) as api:
                yield Live(orchestrator, api, token)
    finally:
        if owned:
            disks.discard(data)  # with any sandbox disk a failed test left mounted


def modules_cache(npm_cache: Path) -> Path:
    """The kept node_modules live beside the npm cache, so every test of a session shares them."""
    return npm_cache.with_name(npm_cache.name + "-modules")


def warm_npm_cache(npm_cache: Path) -> None:
    """Build the example once in a sandbox: later previews install from a warm npm cache, and those of
    the same user start from the node_modules this one leaves behind."""

    async def build() -> None:
        async with live_orchestrator(npm_cache=npm_cache) as live:
            await live.import_project(EXAMPLE, "example")
            preview = await live.create("example")
            ready = await live.settled(preview["id"], timeout=180)
            assert ready["state"] == "ready", ready

    asyncio.run(build())


FLY_TOKEN = "e2e-fly-token"


@dataclass
class EmulatedFly:
    """The Fly Machines API emulator serving on a loopback port; its machines are local sandboxes."""

    emulator: FlyEmulator
    url: str
    sandboxes: Path  # one directory per backing sandbox, named by the backing machine's id

    def settings(self) -> dict[str, Any]:
        """What an orchestrator needs to run its previews here (overrides for ``live_orchestrator``)."""
        return {
            "preview_provider": "fly",
            "fly_api_base_url": self.url,
            "fly_api_token": FLY_TOKEN,
            "fly_agent_route": "emulator",
            "fly_machine_id": None,  # not on Fly, whatever the environment says: proxy, never replay
        }

    async def destroyed(self, machine: EmulatedMachine, timeout: float = 30) -> None:
        """Return once the emulator has destroyed ``machine`` (and with it its backing sandbox)."""
        async with asyncio.timeout(timeout):
            await self.emulator.fleet.wait(machine, frozenset({"destroyed"}), after_event=None)


class QuietServer(uvicorn.Server):
    """Leaves the test process's signal handlers alone."""

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@asynccontextmanager
async def emulated_fly(*, npm_cache: Path) -> AsyncIterator[EmulatedFly]:
    """``velocity fly-emulator --backend local`` in this process, on 127.0.0.1:<free port>.

    The socket listens before the server starts, so early calls wait in its backlog. On exit the
    emulator's lifespan destroys every machine it still has, then the sandboxes' directory goes.
    """
    root = Path(tempfile.mkdtemp(prefix="vp-fly-"))
    provider = LocalSandboxProvider(SandboxOptions(root=root / "sandboxes", npm_cache=npm_cache))
    emulator = FlyEmulator(provider, tokens=[FLY_TOKEN], health=probe_http)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    server = QuietServer(uvicorn.Config(emulator, lifespan="on", log_level="warning"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield EmulatedFly(emulator, f"http://127.0.0.1:{sock.getsockname()[1]}", root / "sandboxes")
    finally:
        server.should_exit = True
        await serving
        sock.close()
        shutil.rmtree(root, ignore_errors=True)
