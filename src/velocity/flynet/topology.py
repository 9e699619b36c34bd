"""The production topology on one machine: the API node, the orchestrator and the edge, each in its
own namespace of a fresh fabric (docs/fly.md, "The topology on one machine").

The orchestrator runs exactly as Fly runs it: ``velocity serve --keep-previews`` (the image's CMD)
with the root ``fly.toml``'s ``[env]`` and Fly's runtime variables, reaching the Machines API at
``_api.internal:4280`` and agents at ``<id>.vm.<app>.internal:8080`` through Fly's resolver; the
only changes are its data directory and ``VELOCITY_PUBLIC_URL`` in plain HTTP (the edge has no TLS).
Clients reach everything through the edge only, at ``edge_url`` on this host's loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import sys
import tomllib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from velocity.deploy.template import parse_machine_template
from velocity.fly.machine_config import service_config
from velocity.flynet import images
from velocity.flynet.fabric import (
    API_ADDRESS,
    DNS_ADDRESS,
    EDGE_PROXY_ADDRESS,
    EDGE_PUBLIC_ADDRESS,
    NETNS_RUN,
    ORCHESTRATOR_PROXY_ADDRESS,
    Fabric,
)

ORCHESTRATOR_APP = "velocity-orchestrator"
ORCHESTRATOR_ID = "0e286039f42e86"  # a machine id as Fly makes them: 14 hex digits
ORCHESTRATOR_PRIVATE_IP = "fdaa:0:1:a7b:1:0:1:2"
PUBLIC_HOST = f"{ORCHESTRATOR_APP}.fly.dev"
START_TIMEOUT = 60.0
IMAGE_UID = 10001  # the orchestrator image's user (Dockerfile's useradd)


@dataclass(frozen=True, slots=True)
class Images:
    """Run the images themselves, with podman, instead of the checkout's code: each preview machine
    as ``preview`` (``velocity.flynet.images``), the orchestrator's machine as ``orchestrator``."""

    preview: str
    orchestrator: str | None = None


@dataclass
class Topology:
    fabric: Fabric
    root: Path  # where the repository's fly.toml lives
    data: Path
    npm_cache: Path
    images: Images | None = None
    token: str = field(default_factory=lambda: "fly-" + secrets.token_hex(16))
    edge_url: str = ""  # the edge, on this host's loopback
    api_url: str = ""  # the Machines API, on this host's loopback (for tests' own checks)
    processes: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)
    output: dict[str, list[str]] = field(default_factory=dict)
    _readers: list[asyncio.Task[None]] = field(default_factory=list)
    _waiters: list[tuple[str, str, asyncio.Future[None]]] = field(default_factory=list)

    # --- what the root fly.toml says ----------------------------------------------------------
    @property
    def fly_toml(self) -> dict[str, Any]:
        return tomllib.loads((self.root / "fly.toml").read_text())

    @property
    def preview_app(self) -> str:
        return str(self.fly_toml["env"]["VELOCITY_FLY_APP_NAME"])

    @property
    def preview_domain(self) -> str:
        return str(self.fly_toml["env"]["PREVIEW_DOMAIN"])

    def orchestrator_env(self) -> dict[str, str]:
        """The orchestrator's environment on Fly: ``[env]``, the secrets, Fly's runtime variables."""
        env = {key: str(value) for key, value in self.fly_toml["env"].items()}
        env |= {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(self.data / "orchestrator"),
            # Fly's runtime environment on the orchestrator's machine
            "FLY_APP_NAME": ORCHESTRATOR_APP,
            "FLY_MACHINE_ID": ORCHESTRATOR_ID,
            "FLY_ALLOC_ID": ORCHESTRATOR_ID,
            "FLY_REGION": "ord",
            "PRIMARY_REGION": str(self.fly_toml.get("primary_region", "ord")),
            "FLY_PRIVATE_IP": ORCHESTRATOR_PRIVATE_IP,
            "FLY_PROCESS_GROUP": "app",
            # `fly secrets set`
            "FLY_API_TOKEN": self.token,
            # the topology's own
            "FLY_API_BASE_URL": "http://_api.internal:4280",
            "VELOCITY_DATA_DIR": str(self.data / "orchestrator"),
            # `fly secrets set DATABASE_URL`: PostgreSQL on Fly; one orchestrator machine here, on a
            # SQLite file (the topology's namespaces reach no database server).
            "DATABASE_URL": f"sqlite+aiosqlite:///{self.data / 'orchestrator' / 'velocity.db'}",
            "VELOCITY_PUBLIC_URL": f"http://{PUBLIC_HOST}",
        }
        return env

    def edge_config(self) -> dict[str, Any]:
        template = parse_machine_template(self.fly_toml, source="fly.toml")
        return {
            "apps": {
                ORCHESTRATOR_APP: {
                    "hosts": [PUBLIC_HOST, f"*.{self.preview_domain}"],
                    "machines": [{"id": ORCHESTRATOR_ID, "address": ORCHESTRATOR_PROXY_ADDRESS}],
                    "services": [service_config(s, s.internal_port) for s in template.services],
                }
            },
            "machines_api": "http://_api.internal:4280",
            "token": self.token,
            "directory": "/_flynet/machines",
        }

    # --- processes ------------------------------------------------------------------------------
    async def start(self) -> None:
        self.fabric.attach("api", private=[API_ADDRESS, DNS_ADDRESS])
        self.fabric.attach(
            "orchestrator", private=[ORCHESTRATOR_PRIVATE_IP], proxy=ORCHESTRATOR_PROXY_ADDRESS
        )
        self.fabric.attach("edge", private=[EDGE_PUBLIC_ADDRESS], proxy=EDGE_PROXY_ADDRESS)
        api_listener, self.api_url = _loopback_listener()
        edge_listener, self.edge_url = _loopback_listener()
        with api_listener, edge_listener:
            await self._spawn(
                "api",
                [
                    sys.executable, "-m", "velocity.flynet.api",
                    "--fabric", self.fabric.name,
                    "--app", self.preview_app,
                    "--token", self.token,
                    "--data-dir", str(self.data / "api"),
                    "--npm-cache", str(self.npm_cache),
                    "--listen-fd", str(api_listener.fileno()),
                    "--machine", f"{ORCHESTRATOR_ID}/{ORCHESTRATOR_APP}/ord/{ORCHESTRATOR_PRIVATE_IP}",
                    "--public", f"{PUBLIC_HOST}={EDGE_PUBLIC_ADDRESS}",
                    "--public", f"*.{self.preview_domain}={EDGE_PUBLIC_ADDRESS}",
                    *(["--image", self.images.preview] if self.images else []),
                ],
                pass_fds=(api_listener.fileno(),),
                enter=self.images is None,  # podman needs the host's mounts; the node needs no resolver
            )  # fmt: skip
            await self.start_orchestrator()
            config = self.data / "edge.json"
            config.write_text(json.dumps(self.edge_config()))
            await self._spawn(
                "edge",
                [
                    sys.executable, "-m", "velocity.flynet.edge",
                    "--config", str(config),
                    "--listen-fd", str(edge_listener.fileno()),
                    "--listen", f"[{EDGE_PUBLIC_ADDRESS}]:80",
                ],
                pass_fds=(edge_listener.fileno(),),
            )  # fmt: skip
        await self.until("edge", f"machine {ORCHESTRATOR_ID} checks passing")

    async def start_orchestrator(self) -> None:
        (self.data / "orchestrator").mkdir(parents=True, exist_ok=True)
        if self.images is not None and self.images.orchestrator is not None:
            container = self._orchestrator_container(self.images.orchestrator)
            await self._spawn("orchestrator", container, ready=None, enter=False)
            return
        velocity = str(Path(sys.executable).parent / "velocity")
        await self._spawn(
            "orchestrator", [velocity, "serve", "--keep-previews"], env=self.orchestrator_env(), ready=None
        )

    def _orchestrator_container(self, image: str) -> list[str]:
        """``podman run`` of the orchestrator's image in its machine's namespace, with the image's CMD
        and its data directory (fly.toml's VELOCITY_DATA_DIR) on this host's ``data/orchestrator``."""
        data = self.data / "orchestrator"
        os.chown(data, IMAGE_UID, IMAGE_UID)
        env = self.orchestrator_env()
        for host_only in ("PATH", "HOME", "LANG"):
            del env[host_only]
        inside = env["VELOCITY_DATA_DIR"] = str(self.fly_toml["env"]["VELOCITY_DATA_DIR"])
        env["DATABASE_URL"] = f"sqlite+aiosqlite:///{inside}/velocity.db"
        env_file = self.data / "orchestrator.env"
        env_file.touch(mode=0o600)
        env_file.write_text("".join(f"{key}={value}\n" for key, value in env.items()))
        return [
            "podman", "run", "--rm", "--name", f"vp-{self.fabric.name}-orchestrator",
            "--label", f"{images.LABEL}={self.fabric.name}",
            "--network", f"ns:{NETNS_RUN / self.fabric.namespace('orchestrator')}", "--dns", DNS_ADDRESS,
            "--env-file", str(env_file), "--volume", f"{data}:{inside}", image,
        ]  # fmt: skip

    async def stop(self, name: str, sig: signal.Signals = signal.SIGTERM, timeout: float = 30) -> int | None:
        process = self.processes.pop(name, None)
        if process is None or process.returncode is not None:
            return None if process is None else process.returncode
        process.send_signal(sig)
        try:
            async with asyncio.timeout(timeout):
                return await process.wait()
        except TimeoutError:
            process.kill()
            return await process.wait()

    async def until(self, name: str, text: str, timeout: float = START_TIMEOUT, *, after: int = 0) -> None:
        """Wait for a line containing ``text`` in ``name``'s output, past its first ``after`` lines
        (seen already, or to come)."""
        if any(text in line for line in self.output.get(name, [])[after:]):
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((name, text, future))
        try:
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError:
            raise TimeoutError(
                f"{name} did not say {text!r} within {timeout} s; it said:\n"
                + "".join(self.output.get(name, []))
            ) from None

    def tails(self, lines: int = 40) -> str:
        """The last lines each process printed, for a test's failure message."""
        return "\n".join(f"--- {name}\n" + "".join(out[-lines:]) for name, out in self.output.items())

    def command(self, node: str, *argv: str) -> list[str]:
        return self.fabric.command(node, *argv)

    async def aclose(self) -> None:
        for name in ("edge", "orchestrator", "api"):
            await self.stop(name)
        for reader in self._readers:
            reader.cancel()
        if self.images is not None:
            await images.remove_containers(self.fabric.name)
        self.fabric.destroy()

    async def _spawn(
        self,
        name: str,
        argv: list[str],
        *,
        env: Mapping[str, str] | None = None,
        pass_fds: tuple[int, ...] = (),
        ready: str | None = '"ready": true',
        enter: bool = True,
    ) -> None:
        """Start ``argv`` in its node (``enter``: with the node's resolver, as ``ip netns exec`` runs
        it; otherwise in its network namespace only, or as given: a ``podman run`` names its own)."""
        node = {"api": "api", "orchestrator": "orchestrator", "edge": "edge"}[name]
        if enter:
            argv = self.fabric.command(node, *argv)
        elif name != "orchestrator":
            argv = self.fabric.network_only(node, *argv)
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=dict(env) if env is not None else {**os.environ, "PYTHONUNBUFFERED": "1"},
            pass_fds=pass_fds,
            start_new_session=True,
        )
        self.processes[name] = process
        self.output[name] = []
        self._readers.append(asyncio.create_task(self._read(name, process), name=f"topology-{name}"))
        if ready is not None:
            await self.until(name, ready)

    async def _read(self, name: str, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while line := (await process.stdout.readline()).decode(errors="replace"):
            self.output[name].append(line)
            for waiter in [w for w in self._waiters if w[0] == name and w[1] in line]:
                self._waiters.remove(waiter)
                if not waiter[2].done():
                    waiter[2].set_result(None)
        for waiter in [w for w in self._waiters if w[0] == name]:
            self._waiters.remove(waiter)
            if not waiter[2].done():
                waiter[2].set_exception(
                    RuntimeError(f"{name} exited ({process.returncode}):\n" + "".join(self.output[name]))
                )


@contextlib.asynccontextmanager
async def topology(
    *, root: Path, data: Path, npm_cache: Path, images: Images | None = None
) -> AsyncIterator[Topology]:
    """A running topology; everything it made is gone after."""
    net = Topology(Fabric.create(), root=root, data=data, npm_cache=npm_cache, images=images)
    try:
        await net.start()
        yield net
    finally:
        await net.aclose()


def _loopback_listener() -> tuple[socket.socket, str]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(512)
    return listener, f"http://127.0.0.1:{listener.getsockname()[1]}"
