"""``velocity smoke-test``: one real machine from the configured image, end to end, then gone.

The steps of the seed guide's ``test-container-deployment.sh``, through the same provider the
orchestrator uses: create, wait until started, see ``/health`` answer, destroy, and check it is gone.
Each step is timed; the machine is destroyed whatever happened (unless ``keep``). ``/health`` is read
from the checks Fly itself runs against the machine, which works from anywhere the token does; with
``direct`` the agent is called at its endpoint, which needs the private network (on Fly, as when run
with ``fly ssh console -a velocity-orchestrator``, or through WireGuard).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from velocity.clock import Clock, SystemClock
from velocity.domain import MachineSpec, MachineState, PreviewError
from velocity.fly.client import FlyClient
from velocity.providers.base import META_OWNER, META_PREVIEW_ID, META_PROJECT_ID, OWNER_VALUE, MachineProvider
from velocity.settings import Settings

META_SMOKE = "velocity_smoke_test"


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    ok: bool
    seconds: float
    detail: str


def smoke_spec(settings: Settings) -> MachineSpec:
    """A machine like a preview's, marked as a smoke test so the reconciler may reap a leftover one."""
    run = secrets.token_hex(4)
    env = {"PROJECT_ID": "smoke-test", "PREVIEW_ID": f"smoke-{run}"}
    if settings.supabase_url:
        env["SUPABASE_URL"] = settings.supabase_url
    if settings.supabase_anon_key is not None:
        env["SUPABASE_ANON_KEY"] = settings.supabase_anon_key.get_secret_value()
    return MachineSpec(
        image=settings.preview_container_image,
        memory_mb=settings.container_memory_mb,
        cpus=settings.container_cpu_count,
        cpu_kind=settings.container_cpu_kind,
        internal_port=settings.container_internal_port,
        env=env,
        metadata={
            META_OWNER: OWNER_VALUE,
            META_PREVIEW_ID: f"smoke-{run}",
            META_PROJECT_ID: "smoke-test",
            META_SMOKE: run,
        },
        region=settings.fly_regions[0] if settings.fly_regions else None,
    )


class SmokeTest:
    def __init__(
        self,
        provider: MachineProvider,
        client: FlyClient,
        *,
        timeout: float = 120.0,
        direct: bool = False,
        keep: bool = False,
        clock: Clock | None = None,
    ) -> None:
        self.provider = provider
        self.client = client
        self.timeout = timeout
        self.direct = direct
        self.keep = keep
        self.clock = clock or SystemClock()
        self.steps: list[Step] = []

    @property
    def passed(self) -> bool:
        return bool(self.steps) and all(step.ok for step in self.steps)

    async def run(self, spec: MachineSpec) -> list[Step]:
        machine_id: str | None = None

        async def create() -> str:
            nonlocal machine_id
            machine = await self.provider.create(spec)
            machine_id = machine.id
            return f"{machine.id} in {machine.region}"

        try:
            if await self._step("create machine", create):
                assert machine_id is not None
                started = await self._step("wait until started", lambda: self._started(machine_id))
                if started:
                    await self._step("/health answers", lambda: self._healthy(machine_id))
        finally:
            if machine_id is not None and not self.keep:
                await self._clean_up(machine_id)
        return self.steps

    async def _clean_up(self, machine_id: str) -> None:
        if await self._step("destroy machine", lambda: self._destroy(machine_id)):
            await self._step("machine is gone", lambda: self._gone(machine_id))

    async def _step(self, name: str, action: Callable[[], Awaitable[str]]) -> bool:
        began = time.perf_counter()
        try:
            detail = await action()
            ok = True
        except (PreviewError, httpx.HTTPError) as exc:
            detail, ok = f"{type(exc).__name__}: {exc}", False
        self.steps.append(Step(name, ok, time.perf_counter() - began, detail))
        return ok

    async def _started(self, machine_id: str) -> str:
        machine = await self.provider.wait(machine_id, state=MachineState.STARTED, timeout=self.timeout)
        return f"{machine.state}"

    async def _healthy(self, machine_id: str) -> str:
        if self.direct:
            endpoint = self.provider.endpoint(await self.provider.get(machine_id))
            transport = httpx.AsyncHTTPTransport(uds=endpoint.uds) if endpoint.uds else None
            async with httpx.AsyncClient(
                transport=transport, base_url=endpoint.base_url, headers=dict(endpoint.headers), timeout=10
            ) as http:
                response = await http.get("/health")
            if response.status_code != 200:
                raise PreviewError(f"GET {endpoint.base_url}/health answered {response.status_code}")
            return f"{endpoint.base_url}/health: 200 {response.text[:80]}"
        deadline = self.clock.now().timestamp() + self.timeout
        while True:
            checks = (await self.client.get_machine(machine_id)).get("checks", [])
            if checks and all(check.get("status") == "passing" for check in checks):
                return ", ".join(f"{c.get('name')}: passing" for c in checks)
            if self.clock.now().timestamp() >= deadline:
                states = ", ".join(
                    f"{c.get('name')}: {c.get('status')} {c.get('output', '')}" for c in checks
                )
                raise PreviewError(
                    f"Fly's health checks did not pass within {self.timeout:g}s ({states or 'none'})"
                )
            await self.clock.sleep(2.0)

    async def _destroy(self, machine_id: str) -> str:
        await self.provider.destroy(machine_id, force=True)
        return "destroy requested"

    async def _gone(self, machine_id: str) -> str:
        await self.provider.wait(machine_id, state=MachineState.DESTROYED, timeout=min(self.timeout, 60.0))
        return "destroyed"
