"""The providers held to one contract: each backend here runs every test in ``test_contract.py``.

A backend is an async context manager that yields a ready ``ContractTarget`` and cleans up after; to
add one, write its factory and register it in ``BACKENDS``, with marks if it needs the real thing
(``local`` and ``fly-emulator-local`` run real bubblewrap sandboxes, so they carry ``e2e``).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.fly.support import TOKEN, emulator_client, make_settings
from velocity.domain import MachineSpec
from velocity.emulator import FlyEmulator
from velocity.emulator.health import probe_http
from velocity.fly.machine_config import MachinePlan, default_template
from velocity.providers.base import MachineProvider
from velocity.providers.fly import FlyProvider
from velocity.providers.local import LocalSandboxProvider, SandboxOptions
from velocity.providers.simulated import SimulatedLatencies, SimulatedProvider

SpecMaker = Callable[[Mapping[str, str]], MachineSpec]


def spec_with_image(image: str, *, port: int = 8080, env: Mapping[str, str] | None = None) -> SpecMaker:
    """Specs as the service makes them, with the metadata each test gives and ``env`` added."""

    def make(metadata: Mapping[str, str]) -> MachineSpec:
        return MachineSpec(
            image=image, memory_mb=512, cpus=1, cpu_kind="shared", internal_port=port,
            env={"PROJECT_ID": metadata.get("project_id", "contract"), **(env or {})}, metadata=dict(metadata),
        )  # fmt: skip

    return make


@dataclass(frozen=True, slots=True)
class ContractTarget:
    provider: MachineProvider
    spec: SpecMaker
    boot_timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class Backend:
    factory: Callable[[Path], AbstractAsyncContextManager[ContractTarget]]
    marks: tuple[pytest.MarkDecorator, ...] = field(default=())


@contextlib.asynccontextmanager
async def simulated(tmp_path: Path) -> AsyncIterator[ContractTarget]:
    """In memory, with a little latency so states are seen in passing."""
    provider = SimulatedProvider(SimulatedLatencies(create=0.001, boot=0.01, stop=0.005, destroy=0.005))
    try:
        yield ContractTarget(provider, spec_with_image("simulated"))
    finally:
        await provider.aclose()


@contextlib.asynccontextmanager
async def fly_on_emulator(tmp_path: Path) -> AsyncIterator[ContractTarget]:
    """The Fly provider over ASGI to the emulator (simulated machines, Fly's rate limits enforced)."""
    emulator = FlyEmulator(tokens=[TOKEN])
    settings = make_settings()
    provider = FlyProvider(
        emulator_client(emulator), MachinePlan.from_settings(settings, default_template(settings))
    )
    try:
        yield ContractTarget(provider, spec_with_image("ghcr.io/velocity/preview-container:1.0.0"))
    finally:
        await provider.aclose()
        await emulator.aclose()


@contextlib.asynccontextmanager
async def local_sandboxes(tmp_path: Path) -> AsyncIterator[ContractTarget]:
    """Real sandboxes running the agent. With no snapshot and no package.json the agent fails at once;
    a long linger keeps it answering ``/health`` until it is stopped, as a machine that serves would.

    The root is short (not pytest's ``tmp_path``): the agent's unix socket lives under it, and a socket
    path must fit in 108 bytes.
    """
    root = Path(tempfile.mkdtemp(prefix="vp-"))
    provider = LocalSandboxProvider(SandboxOptions(root=root / "sandboxes", npm_cache=root / "npm"))
    await provider.start_watching()
    try:
        yield ContractTarget(provider, spec_with_image("local", env={"AGENT_LINGER_SECONDS": "600"}))
    finally:
        for machine in await provider.list():
            await provider.destroy(machine.id)  # what a failing test left running
        await provider.aclose()
        shutil.rmtree(root, ignore_errors=True)


@contextlib.asynccontextmanager
async def fly_on_emulated_sandboxes(tmp_path: Path) -> AsyncIterator[ContractTarget]:
    """``PREVIEW_PROVIDER=fly`` on a laptop: the Fly provider (``agent_route="emulator"``) over ASGI to
    the emulator, whose machines are real sandboxes running the agent."""
    async with local_sandboxes(tmp_path) as local:
        emulator = FlyEmulator(local.provider, tokens=[TOKEN], health=probe_http)
        settings = make_settings()
        plan = MachinePlan.from_settings(settings, default_template(settings))
        provider = FlyProvider(emulator_client(emulator), plan, agent_route="emulator")
        try:
            yield ContractTarget(provider, local.spec)
        finally:
            await provider.aclose()
            await emulator.aclose()


BACKENDS: dict[str, Backend] = {
    "simulated": Backend(simulated),
    "fly-emulator": Backend(fly_on_emulator),
    "local": Backend(local_sandboxes, marks=(pytest.mark.e2e,)),
    "fly-emulator-local": Backend(fly_on_emulated_sandboxes, marks=(pytest.mark.e2e,)),
}


@pytest.fixture(
    params=[pytest.param(name, marks=backend.marks) for name, backend in sorted(BACKENDS.items())]
)
async def target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ContractTarget]:
    async with BACKENDS[request.param].factory(tmp_path) as target:
        yield target


@pytest.fixture
def provider(target: ContractTarget) -> MachineProvider:
    return target.provider


@pytest.fixture
def make_spec(target: ContractTarget) -> SpecMaker:
    return target.spec
