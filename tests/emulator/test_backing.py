"""Emulated machines run on any ``MachineProvider``: the config becomes a ``MachineSpec``, health is probed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest

from tests.fly.support import APP, TOKEN, InstantClock, emulator_client, emulator_http, make_settings
from velocity.domain import Machine, MachineSpec, MachineState
from velocity.emulator import Faults, FlyEmulator
from velocity.providers.base import AgentEndpoint
from velocity.providers.simulated import SimulatedProvider

IMAGE = "ghcr.io/velocity/preview-container:1.0.0"
CONFIG = {
    "image": IMAGE,
    "guest": {"cpu_kind": "performance", "cpus": 2, "memory_mb": 4096},
    "env": {"PROJECT_ID": "p1"},
    "metadata": {"project_id": "p1"},
    "services": [
        {"internal_port": 9000, "checks": [{"type": "http", "path": "/health", "interval": "15s"}]},
    ],
}


class RecordingProvider(SimulatedProvider):
    """The simulated provider, remembering every spec it was asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.specs: list[MachineSpec] = []

    async def create(self, spec: MachineSpec) -> Machine:
        self.specs.append(spec)
        return await super().create(spec)


class Probe:
    def __init__(self, healthy: bool) -> None:
        self.healthy = healthy
        self.seen: list[tuple[AgentEndpoint, str]] = []

    async def __call__(self, endpoint: AgentEndpoint, path: str) -> bool:
        self.seen.append((endpoint, path))
        return self.healthy


@pytest.fixture
def provider() -> RecordingProvider:
    return RecordingProvider()


@pytest.fixture
def probe() -> Probe:
    return Probe(healthy=True)


@pytest.fixture
async def backed(provider: RecordingProvider, probe: Probe) -> AsyncIterator[FlyEmulator]:
    emulator = FlyEmulator(
        provider, tokens=[TOKEN], clock=InstantClock(), health=probe, faults=Faults(enforce_rate_limits=False)
    )
    yield emulator
    await emulator.aclose()


@pytest.fixture
async def http(backed: FlyEmulator) -> AsyncIterator[httpx.AsyncClient]:
    async with emulator_http(backed) as client:
        client.headers["authorization"] = f"Bearer {TOKEN}"
        yield client


async def start(http: httpx.AsyncClient) -> str:
    machine = (await http.post(f"/v1/apps/{APP}/machines", json={"config": CONFIG, "region": "iad"})).json()
    await http.get(f"/v1/apps/{APP}/machines/{machine['id']}/wait", params={"state": "started"})
    return str(machine["id"])


async def test_the_fly_config_becomes_the_backing_machine_spec(
    http: httpx.AsyncClient, provider: RecordingProvider
) -> None:
    """Image, guest size, the first service's port, env, metadata and region reach the provider, and
    the environment Fly gives every machine ("Machine runtime environment")."""
    machine_id = await start(http)
    machine = (await http.get(f"/v1/apps/{APP}/machines/{machine_id}")).json()
    [spec] = provider.specs
    assert replace(spec, env={}) == MachineSpec(
        image=IMAGE,
        memory_mb=4096,
        cpus=2,
        cpu_kind="performance",
        internal_port=9000,
        env={},
        metadata={"project_id": "p1"},
        region="iad",
    )
    assert spec.env == {
        "PROJECT_ID": "p1",
        "FLY_APP_NAME": APP,
        "FLY_MACHINE_ID": machine["id"],
        "FLY_ALLOC_ID": machine["id"],
        "FLY_REGION": "iad",
        "PRIMARY_REGION": "iad",
        "FLY_PRIVATE_IP": machine["private_ip"],
        "FLY_IMAGE_REF": IMAGE,
        "FLY_MACHINE_VERSION": machine["instance_id"],
        "FLY_PROCESS_GROUP": "app",
        "FLY_VM_MEMORY_MB": "4096",
    }


async def test_stopping_destroys_the_backing_machine_and_starting_makes_a_fresh_one(
    backed: FlyEmulator, http: httpx.AsyncClient, provider: RecordingProvider
) -> None:
    """Fly resets a stopped machine's filesystem on start; the emulator boots a new backing machine."""
    machine_id = await start(http)
    first = backed.fleet.machines[machine_id].backing_id
    await http.post(f"/v1/apps/{APP}/machines/{machine_id}/stop")
    await http.get(f"/v1/apps/{APP}/machines/{machine_id}/wait", params={"state": "stopped"})
    assert await provider.list() == []
    await http.post(f"/v1/apps/{APP}/machines/{machine_id}/start")
    await http.get(f"/v1/apps/{APP}/machines/{machine_id}/wait", params={"state": "started"})
    second = backed.fleet.machines[machine_id].backing_id
    assert second is not None and second != first
    assert [m.state for m in await provider.list()] == [MachineState.STARTED]


@pytest.mark.parametrize(("healthy", "status"), [(True, "passing"), (False, "critical")])
async def test_checks_report_what_the_probe_of_the_agent_says(
    http: httpx.AsyncClient, probe: Probe, healthy: bool, status: str
) -> None:
    """Each HTTP check of the config is probed on the backing machine's endpoint and path."""
    probe.healthy = healthy
    machine_id = await start(http)
    checks = (await http.get(f"/v1/apps/{APP}/machines/{machine_id}")).json()["checks"]
    assert [(c["name"], c["status"]) for c in checks] == [("servicecheck-00-http-0", status)]
    [(endpoint, path)] = probe.seen
    assert path == "/health"
    assert endpoint.base_url.endswith(":9000")


async def test_the_emulator_says_where_a_machine_agent_listens(
    backed: FlyEmulator, http: httpx.AsyncClient
) -> None:
    """``/_emulator/.../agent`` gives the backing endpoint; 409 once the machine no longer runs."""
    machine_id = await start(http)
    path = f"/_emulator/v1/apps/{APP}/machines/{machine_id}/agent"
    found = (await http.get(path)).json()
    assert found["base_url"].endswith(":9000")
    await http.delete(f"/v1/apps/{APP}/machines/{machine_id}", params={"force": "true"})
    await http.get(f"/v1/apps/{APP}/machines/{machine_id}/wait", params={"state": "destroyed"})
    assert (await http.get(path)).status_code == 404


async def test_closing_the_emulator_destroys_every_backing_machine(
    backed: FlyEmulator, http: httpx.AsyncClient, provider: RecordingProvider
) -> None:
    """Nothing the emulator started outlives it."""
    await start(http)
    await start(http)
    await backed.aclose()
    assert await provider.list() == []


async def test_the_fly_provider_learns_agent_endpoints_from_the_emulator(backed: FlyEmulator) -> None:
    """With ``agent_route="emulator"`` the Fly provider reaches the backing machine's agent directly."""
    from velocity.fly.machine_config import MachinePlan, default_template
    from velocity.providers.fly import FlyProvider

    settings = make_settings(container_internal_port=9000)
    plan = MachinePlan(template=default_template(settings), regions=("ord",))
    provider = FlyProvider(emulator_client(backed), plan, agent_route="emulator")
    spec = MachineSpec(
        image="ghcr.io/velocity/preview-container:1.0.0", memory_mb=512, cpus=1, cpu_kind="shared",
        internal_port=9000, env={}, metadata={"project_id": "p"},
    )  # fmt: skip
    machine = await provider.create(spec)
    started = await provider.wait(machine.id, state=MachineState.STARTED, timeout=5)
    endpoint = provider.endpoint(started)
    assert endpoint.base_url.startswith("http://sim-") and endpoint.base_url.endswith(":9000")
    # Another replica, which never waited for this machine, learns the endpoint when it looks it up.
    other = FlyProvider(emulator_client(backed), plan, agent_route="emulator")
    assert other.endpoint(await other.get(machine.id)) == endpoint
    await provider.destroy(machine.id)
    await provider.aclose()
    await other.aclose()
