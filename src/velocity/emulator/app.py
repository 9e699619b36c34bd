"""The Fly Machines API emulator as an ASGI app: ``httpx.ASGITransport(FlyEmulator(...))`` in tests,
``velocity fly-emulator --port 4280`` on a laptop.

Each call is authenticated (``Bearer`` or ``FlyV1``), counted, rate limited the way Fly documents
(429 with ``Retry-After``), passed through the configured faults, then answered. Routes under
``/_emulator`` are the emulator's own (statistics, faults, where a machine's agent listens); nothing
under ``/v1`` exists that Fly does not have.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from velocity.clock import Clock, SystemClock
from velocity.domain import ConfigError
from velocity.emulator import ids
from velocity.emulator.errors import ApiError, read_json
from velocity.emulator.faults import Faults, FaultState
from velocity.emulator.fleet import Fleet, HealthProbe
from velocity.emulator.machines_api import MachinesAPI
from velocity.fly.ratelimit import RateLimiter
from velocity.providers.base import MachineProvider
from velocity.providers.simulated import SimulatedProvider

Handler = Callable[[Request], Awaitable[Response]]
MACHINE = "/v1/apps/{app}/machines/{machine_id}"
OWNER = "emulator@velocity.invalid"


@dataclass(slots=True)
class EmulatorStats:
    """What the emulator was asked and what it answered: the benchmark counts API calls here."""

    calls: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    rate_limited: Counter[str] = field(default_factory=Counter)

    def as_json(self) -> dict[str, Any]:
        return {
            "calls": dict(self.calls),
            "statuses": {str(k): v for k, v in self.statuses.items()},
            "rate_limited": dict(self.rate_limited),
        }


@dataclass(slots=True)
class AppRecord:
    name: str
    org_slug: str
    network: str
    id: str
    created_at: int


class FlyEmulator:
    def __init__(
        self,
        provider: MachineProvider | None = None,
        *,
        apps: Iterable[str] = ("velocity-preview-containers",),
        tokens: Iterable[str] | None = None,
        faults: Faults | None = None,
        clock: Clock | None = None,
        health: HealthProbe | None = None,
        org_slug: str = "personal",
        default_region: str = "ord",
    ) -> None:
        self.clock = clock or SystemClock()
        self.provider = provider or SimulatedProvider(clock=self.clock)
        self.fleet = Fleet(self.provider, self.clock, health=health)
        self.org_slug = org_slug
        self.tokens = frozenset(tokens) if tokens is not None else None
        self.stats = EmulatorStats()
        self._faults = FaultState()
        self._limiter = RateLimiter(self.clock)
        self.apps: dict[str, AppRecord] = {}
        for name in apps:
            self._add_app(name, org_slug)
        self.faults = faults or Faults()
        self.machines_api = MachinesAPI(self.fleet, self._faults, default_region=default_region, owner=OWNER)
        self.asgi = Starlette(routes=self._routes(), lifespan=self._lifespan)
        # Changes being made: as Fly's API, the emulator finishes a call whose caller has gone.
        self._in_flight = 0
        self._quiet = asyncio.Event()
        self._quiet.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.asgi(scope, receive, send)

    async def quiet(self) -> None:
        """Until no call that changes machines is being answered (one whose caller has gone too)."""
        await self._quiet.wait()

    @property
    def faults(self) -> Faults:
        return self._faults.faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        """Replace the faults; "next N calls" counters start again from zero."""
        self._faults.faults = faults
        self._faults.throttled = self._faults.server_errors = self._faults.lost_creates = 0
        self.fleet.failing_images = faults.failing_images
        self._limiter = RateLimiter(self.clock, scale=faults.rate_limit_scale)

    async def aclose(self) -> None:
        await self.fleet.aclose()
        await self.provider.aclose()

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """Under a server (uvicorn), start the provider's watchers and clean every machine up at exit."""
        start_watching = getattr(self.provider, "start_watching", None)
        if start_watching is not None:
            await start_watching()
        try:
            yield
        finally:
            await self.aclose()

    # --- plumbing shared by every route ---------------------------------------------------------
    def _routes(self) -> list[Route]:
        m = self.machines_api

        def route(path: str, action: str, handler: Handler, method: str, *, app_wide: bool = False) -> Route:
            return Route(path, self._endpoint(action, handler, app_wide=app_wide), methods=[method])

        return [
            route("/v1/apps", "list_apps", self._list_apps, "GET", app_wide=True),
            route("/v1/apps", "create_app", self._create_app, "POST", app_wide=True),
            route("/v1/tokens/current", "current_token", self._current_token, "GET", app_wide=True),
            route("/v1/apps/{app}", "get_app", self._get_app, "GET", app_wide=True),
            route("/v1/apps/{app}", "delete_app", self._delete_app, "DELETE", app_wide=True),
            route("/v1/apps/{app}/machines", "list", m.list, "GET", app_wide=True),
            route("/v1/apps/{app}/machines", "create", m.create, "POST", app_wide=True),
            route(MACHINE, "get", m.get, "GET"),
            route(MACHINE, "update", m.update, "POST"),
            route(MACHINE, "destroy", m.destroy, "DELETE"),
            route(MACHINE + "/start", "start", m.start, "POST"),
            route(MACHINE + "/stop", "stop", m.stop, "POST"),
            route(MACHINE + "/suspend", "suspend", m.suspend, "POST"),
            route(MACHINE + "/wait", "wait", m.wait, "GET"),
            route(MACHINE + "/events", "events", m.events, "GET"),
            route(MACHINE + "/lease", "lease", m.acquire_lease, "POST"),
            route(MACHINE + "/lease", "lease_get", m.show_lease, "GET"),
            route(MACHINE + "/lease", "lease_release", m.release_lease, "DELETE"),
            route(MACHINE + "/metadata", "metadata_get", m.metadata, "GET"),
            route(MACHINE + "/metadata", "metadata", m.update_metadata, "PATCH"),
            route(MACHINE + "/metadata", "metadata", m.update_metadata, "PUT"),
            route(MACHINE + "/metadata/{key}", "metadata_get", m.metadata_key, "GET"),
            route(MACHINE + "/metadata/{key}", "metadata", m.set_metadata_key, "POST"),
            route(MACHINE + "/metadata/{key}", "metadata", m.delete_metadata_key, "DELETE"),
            Route("/_emulator/stats", self._stats, methods=["GET"]),
            Route("/_emulator/faults", self._set_faults, methods=["PUT"]),
            Route("/_emulator/v1/apps/{app}/machines/{machine_id}/agent", self._agent, methods=["GET"]),
        ]

    def _endpoint(self, action: str, handler: Handler, *, app_wide: bool) -> Handler:
        async def endpoint(request: Request) -> Response:
            self.stats.calls[action] += 1
            if request.method == "GET":  # reads change nothing (and a wait may last a minute)
                return await answer(request)
            self._in_flight += 1
            self._quiet.clear()
            try:
                return await answer(request)
            finally:
                self._in_flight -= 1
                if self._in_flight == 0:
                    self._quiet.set()

        async def answer(request: Request) -> Response:
            try:
                self._authenticate(request)
                params = request.path_params
                self._rate_limit(action, params.get("app", "-") if app_wide else params["machine_id"])
                await self._inject(action)
                if "app" in params and params["app"] not in self.apps:
                    raise ApiError(404, "app not found")
                response = await handler(request)
            except ApiError as exc:
                response = exc.response()
            response.headers["fly-request-id"] = f"{ids.ulid(self.clock.now())}-emu"
            self.stats.statuses[response.status_code] += 1
            return response

        return endpoint

    def _authenticate(self, request: Request) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme not in ("Bearer", "FlyV1") or not token:
            raise ApiError(401, "You must be authenticated to view this.")
        if self.tokens is not None and token not in self.tokens:
            raise ApiError(401, "token validation error: the token is not valid")

    def _rate_limit(self, action: str, key: str) -> None:
        if not self.faults.enforce_rate_limits:
            return
        wait = self._limiter.try_take(action, key)
        if wait is not None:
            self.stats.rate_limited[action] += 1
            raise ApiError(429, "rate limit exceeded", headers={"retry-after": str(max(1, math.ceil(wait)))})

    async def _inject(self, action: str) -> None:
        faults = self.faults
        if faults.slow_seconds > 0:
            await self.clock.sleep(faults.slow_seconds)
        if self._faults.take_throttle(action):
            headers = {"retry-after": str(faults.retry_after)} if faults.retry_after is not None else {}
            raise ApiError(429, "rate limit exceeded", headers=headers)
        if self._faults.take_server_error(action):
            raise ApiError(faults.server_error_status, "internal error: injected by the emulator")

    # --- apps and tokens ------------------------------------------------------------------------
    def _add_app(self, name: str, org_slug: str, network: str = "default") -> AppRecord:
        record = AppRecord(
            name, org_slug, network, ids.machine_id(), int(self.clock.now().timestamp() * 1000)
        )
        self.apps[name] = record
        return record

    def _app_json(self, app: AppRecord) -> dict[str, Any]:
        count = sum(1 for m in self.fleet.machines.values() if m.app == app.name and m.state != "destroyed")
        return {
            "id": app.id,
            "name": app.name,
            "status": "deployed",
            "network": app.network,
            "machine_count": count,
            "volume_count": 0,
            "organization": {"name": app.org_slug, "slug": app.org_slug},
        }

    async def _list_apps(self, request: Request) -> Response:
        org = request.query_params.get("org_slug")
        if not org:
            raise ApiError(400, "org_slug is required")
        apps = [self._app_json(a) for a in self.apps.values() if org in (a.org_slug, "personal")]
        return JSONResponse({"apps": apps, "total_apps": len(apps)})

    async def _create_app(self, request: Request) -> Response:
        body = await read_json(request, go_type="main.createAppRequest")
        # The spec and fly-go say ``name``; the docs' examples say ``app_name``.
        name = body.get("name") or body.get("app_name")
        if not isinstance(name, str) or not name:
            raise ApiError(400, "name is required")
        if not body.get("org_slug"):
            raise ApiError(400, "org_slug is required")
        if name in self.apps:
            raise ApiError(422, "Validation failed: Name has already been taken", fly_status="name_taken")
        app = self._add_app(name, body["org_slug"], body.get("network") or "default")
        return JSONResponse({"id": app.id, "created_at": app.created_at}, status_code=201)

    async def _get_app(self, request: Request) -> Response:
        return JSONResponse(self._app_json(self.apps[request.path_params["app"]]))

    async def _delete_app(self, request: Request) -> Response:
        name = request.path_params["app"]
        for machine in list(self.fleet.machines.values()):
            if machine.app == name and machine.state != "destroyed":
                self.fleet.destroy(machine)
        del self.apps[name]
        return Response(status_code=202)

    async def _current_token(self, request: Request) -> Response:
        token = {"org_slug": self.org_slug, "organization": self.org_slug, "apps": sorted(self.apps)}
        return JSONResponse({"tokens": [{**token, "token_id": "emulator", "user": OWNER}]})

    # --- the emulator's own routes --------------------------------------------------------------
    async def _stats(self, request: Request) -> Response:
        return JSONResponse(self.stats.as_json())

    async def _set_faults(self, request: Request) -> Response:
        try:
            self.faults = Faults.from_mapping(await read_json(request, go_type="faults"))
        except (ConfigError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except ApiError as exc:
            return exc.response()
        return Response(status_code=204)

    async def _agent(self, request: Request) -> Response:
        try:
            self._authenticate(request)
            machine = self.machines_api.machine(request)
        except ApiError as exc:
            return exc.response()
        endpoint = await self.fleet.agent_endpoint(machine)
        if endpoint is None:
            return JSONResponse(
                {"error": f"machine is {machine.state}; no agent is running"}, status_code=409
            )
        return JSONResponse(
            {"base_url": endpoint.base_url, "uds": endpoint.uds, "headers": dict(endpoint.headers)}
        )
