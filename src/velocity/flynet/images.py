"""Machines that are the preview image itself: each a container run by podman in its machine's
namespace, as Fly runs a machine's image in a Firecracker guest on the private network.

With ``python -m velocity.flynet.api --image REF`` the API node runs every machine this way instead
of as a local sandbox; ``REF`` stands in for the registry (whatever image the machine's config names,
``REF`` runs). The container gets what a Fly guest gets: the config's environment with Fly's runtime
variables, the machine's memory and CPUs, root with ``CAP_NET_ADMIN`` (the entrypoint loads the
firewall with it), Fly's resolver, and the image's own CMD.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
import secrets
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from velocity.domain import Machine, MachineSpec, MachineState, NotFound, SandboxUnavailable, Unavailable
from velocity.flynet.fabric import DNS_ADDRESS
from velocity.providers.base import STOPPED_OR_BEYOND, AgentEndpoint

LABEL = "velocity.flynet"  # on every container, with the fabric's name: what to remove after
STOP_GRACE_SECONDS = 5  # Fly's default kill_timeout


class Network(Protocol):
    """Where a machine lives on the fabric (``velocity.flynet.api.MachineNetwork``)."""

    def enter(self, machine_id: str, spec: MachineSpec) -> list[str]: ...

    def leave(self, machine_id: str) -> None: ...

    def namespace(self, machine_id: str) -> Path: ...

    def endpoint(self, machine_id: str) -> AgentEndpoint: ...


@dataclass
class _Container:
    machine: Machine
    name: str
    waiter: asyncio.Task[None] | None = None
    output: list[str] = field(default_factory=list)


async def podman(*args: str, timeout: float = 120) -> str:
    """Run ``podman ARGS``; its output, or ``SandboxUnavailable`` with what it said."""
    process = await asyncio.create_subprocess_exec(
        "podman",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise SandboxUnavailable(f"podman {args[0]} took over {timeout} s") from None
    if process.returncode != 0:
        raise SandboxUnavailable(f"podman {args[0]} failed: {err.decode(errors='replace').strip()[-500:]}")
    return out.decode(errors="replace")


def env_file(env: Mapping[str, str], directory: Path) -> Path:
    """The machine's environment in a file only root reads (not on podman's command line)."""
    fd, name = tempfile.mkstemp(prefix="env-", dir=directory)
    with os.fdopen(fd, "w") as out:
        for key, value in env.items():
            if "\n" in value:
                raise SandboxUnavailable(f"the machine's {key} holds a newline, which an env file cannot")
            out.write(f"{key}={value}\n")
    return Path(name)


class ImageMachines:
    """A ``MachineProvider`` whose machines are containers of one image."""

    name = "image"

    def __init__(self, network: Network, image: str, *, fabric: str, data: Path) -> None:
        self._network = network
        self._image = image
        self._fabric = fabric
        self._data = data
        self._containers: dict[str, _Container] = {}
        self._changed = asyncio.Condition()

    async def create(self, spec: MachineSpec) -> Machine:
        machine_id = "img" + secrets.token_hex(6)
        name = f"vp-{self._fabric}-{machine_id}"
        now = datetime.now(UTC)
        machine = Machine(
            machine_id,
            MachineState.STARTING,
            dict(spec.metadata),
            now,
            private_ip=spec.env.get("FLY_PRIVATE_IP"),
        )
        container = _Container(machine, name)
        self._containers[machine_id] = container
        try:
            await asyncio.to_thread(self._network.enter, machine_id, spec)
            self._data.mkdir(parents=True, exist_ok=True)
            env = env_file(spec.env, self._data)
            try:
                await podman(
                    "run", "--detach", "--name", name, "--label", f"{LABEL}={self._fabric}",
                    "--network", f"ns:{self._network.namespace(machine_id)}",
                    "--dns", DNS_ADDRESS, "--cap-add", "NET_ADMIN",
                    "--memory", f"{spec.memory_mb}m", "--cpus", str(spec.cpus),
                    "--stop-timeout", str(STOP_GRACE_SECONDS), "--env-file", str(env),
                    self._image,
                )  # fmt: skip
            finally:
                env.unlink()
        except (SandboxUnavailable, OSError) as exc:
            await self._forget(machine_id)
            raise SandboxUnavailable(f"could not run {self._image}: {exc}") from exc
        container.waiter = asyncio.create_task(self._wait_exit(container), name=f"image-wait-{machine_id}")
        await self._set(machine_id, MachineState.STARTED)
        return self._containers[machine_id].machine

    async def get(self, machine_id: str) -> Machine:
        container = self._containers.get(machine_id)
        if container is None:
            raise NotFound(f"machine {machine_id} not found")
        return container.machine

    async def list(self, *, metadata: Mapping[str, str] | None = None) -> builtins.list[Machine]:
        wanted = dict(metadata or {})
        return [
            c.machine
            for c in self._containers.values()
            if c.machine.state is not MachineState.DESTROYED
            and all(c.machine.metadata.get(k) == v for k, v in wanted.items())
        ]

    async def wait(self, machine_id: str, *, state: MachineState, timeout: float) -> Machine:
        await self.get(machine_id)

        def reached() -> bool:
            current = self._containers[machine_id].machine.state
            return current is state or (state is MachineState.STOPPED and current in STOPPED_OR_BEYOND)

        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(reached)
        except TimeoutError:
            raise Unavailable(
                f"machine {machine_id} did not reach {state.value} within {timeout} s"
            ) from None
        return self._containers[machine_id].machine

    async def stop(self, machine_id: str, *, timeout: float = STOP_GRACE_SECONDS) -> None:
        container = self._containers[machine_id]
        if container.machine.state in STOPPED_OR_BEYOND:
            return
        await self.resume(machine_id)  # a paused container takes no signal
        await self._set(machine_id, MachineState.STOPPING)
        await podman("stop", "--time", str(int(timeout)), container.name, timeout=timeout + 30)
        await self.wait(machine_id, state=MachineState.STOPPED, timeout=30)

    async def assign(self, machine_id: str, metadata: Mapping[str, str]) -> None:
        container = self._containers[machine_id]
        container.machine = replace(container.machine, metadata={**container.machine.metadata, **metadata})

    async def suspend(self, machine_id: str) -> bool:
        """``podman pause``: the container's cgroup frozen, as the local provider freezes a sandbox."""
        container = self._containers[machine_id]
        if container.machine.state is not MachineState.STARTED:
            return False
        await podman("pause", container.name, timeout=30)
        await self._set(machine_id, MachineState.SUSPENDED)
        return True

    async def resume(self, machine_id: str) -> None:
        container = self._containers[machine_id]
        if container.machine.state is MachineState.SUSPENDED:
            await podman("unpause", container.name, timeout=30)
            await self._set(machine_id, MachineState.STARTED)

    async def destroy(self, machine_id: str, *, force: bool = True) -> None:
        container = self._containers.get(machine_id)
        if container is None or container.machine.state is MachineState.DESTROYED:
            return
        await self._set(machine_id, MachineState.DESTROYING)
        if container.waiter is not None:
            container.waiter.cancel()
            await asyncio.wait([container.waiter])
        with contextlib.suppress(SandboxUnavailable):
            container.output = (await podman("logs", "--tail", "200", container.name)).splitlines()
        await podman("rm", "--force", "--time", str(STOP_GRACE_SECONDS), container.name, timeout=60)
        await asyncio.to_thread(self._network.leave, machine_id)
        await self._set(machine_id, MachineState.DESTROYED)

    async def logs(self, machine_id: str, *, tail: int = 100) -> builtins.list[str]:
        container = self._containers[machine_id]
        if container.machine.state is MachineState.DESTROYED:
            return container.output[-tail:]
        return (await podman("logs", "--tail", str(tail), container.name)).splitlines()

    def endpoint(self, machine: Machine) -> AgentEndpoint:
        return self._network.endpoint(machine.id)

    async def aclose(self) -> None:
        for machine_id in builtins.list(self._containers):
            with contextlib.suppress(SandboxUnavailable):
                await self.destroy(machine_id)

    async def _wait_exit(self, container: _Container) -> None:
        """The container's exit, as Fly reports a guest's: stopped, with the exit code."""
        try:
            code = (await podman("wait", container.name, timeout=10**9)).strip()
        except SandboxUnavailable as exc:
            code = f"unknown ({exc})"
        if container.machine.state in (MachineState.STARTED, MachineState.STOPPING):
            await self._set(container.machine.id, MachineState.STOPPED, exit_reason=f"exit code {code}")

    async def _set(self, machine_id: str, state: MachineState, *, exit_reason: str | None = None) -> None:
        container = self._containers[machine_id]
        container.machine = replace(
            container.machine,
            state=state,
            exit_reason=exit_reason or container.machine.exit_reason,
            updated_at=datetime.now(UTC),
        )
        async with self._changed:
            self._changed.notify_all()

    async def _forget(self, machine_id: str) -> None:
        self._containers.pop(machine_id, None)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self._network.leave, machine_id)


async def remove_containers(fabric: str) -> None:
    """Every container a fabric's machines left (after a crash of the API node)."""
    names = (await podman("ps", "--all", "--quiet", "--filter", f"label={LABEL}={fabric}")).split()
    if names:
        await podman("rm", "--force", "--time", "0", *names, timeout=120)
