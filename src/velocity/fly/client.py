"""A thin async client of the Machines API endpoints the orchestrator uses.

Every call goes through ``_call``: take a token from the limiter, send, map failures to our errors
(``errors``), and, for idempotent calls, retry transient ones with stamina, waiting what
``Retry-After`` says when Fly says it. Creates are not idempotent (Fly takes no idempotency key), so a
create is only resent when Fly certainly did not act; when it may have (a timeout, a 5xx), the client
first looks for the machine by the unique tag it put in the metadata.
"""

from __future__ import annotations

import math
import time
import uuid
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote

import httpx
import stamina

from velocity import metrics
from velocity.clock import Clock, SystemClock
from velocity.domain import ConfigError, NotFound, ProviderError, RateLimited, Unavailable
from velocity.fly.errors import MaybeApplied, error_from_response, error_from_transport
from velocity.fly.ratelimit import UNLIMITED, RateLimiter
from velocity.fly.types import (
    AppJSON,
    CreateAppRequest,
    CreateAppResponse,
    CreateMachineRequest,
    CurrentTokenResponse,
    LeaseData,
    LeaseEnvelope,
    MachineConfig,
    MachineJSON,
    StopRequest,
    UpdateMachineRequest,
    WaitResponse,
)
from velocity.providers.base import META_CREATE_TAG
from velocity.settings import Settings

# Clients the machine waits are spread over (see ``FlyClient.__init__``).
WAIT_POOLS = 32

NONCE_HEADER = "fly-machine-lease-nonce"
# The client keeps 10% under Fly's documented rates: Fly's buckets start when our first call lands,
# a little after ours, and jitter in latency must not tip a call over the limit.
CLIENT_MARGIN = 0.9
# Fly's proxy cuts requests at 60 s, so one wait call never asks for more (fly-go clamps the same way).
MAX_WAIT_SLICE = 60


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard the client tries before giving up; tests shrink it, stamina's test mode skips waits."""

    attempts: int = 5
    timeout: float = 45.0
    wait_initial: float = 0.2
    wait_max: float = 5.0
    create_attempts: int = 3
    # The machine list is eventually consistent: look for a lost create more than once.
    lookup_attempts: int = 2
    lookup_delay: float = 0.5


def authorization_header(token: str) -> str:
    """``Bearer`` for plain tokens, ``FlyV1`` for macaroons (``fm1``/``fm2`` prefixes), as fly-go does."""
    token = token.strip()
    if token.startswith(("Bearer ", "FlyV1 ")):
        return token
    if token.startswith(("fm1r_", "fm1a_", "fm2_")):
        return f"FlyV1 {token}"
    return f"Bearer {token}"


def retry_delay(exc: Exception) -> bool | float:
    """stamina's hook: retry transient errors, waiting exactly what ``Retry-After`` asked when given."""
    if isinstance(exc, RateLimited):
        return exc.retry_after or 1.0
    if isinstance(exc, Unavailable):
        return exc.retry_after if exc.retry_after else True
    return False


def _retry_unless_applied(exc: Exception) -> bool | float:
    return False if isinstance(exc, MaybeApplied) else retry_delay(exc)


class FlyClient:
    """One app's machines. ``http`` carries the base URL; tests give it a mock or the emulator.

    ``waits`` carries the long-polls of ``wait`` (up to 60 s each, one per watched machine): in a
    pool of their own, they never hold the connections creates and destroys need. Without it, ``http``
    carries them too.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        waits: Sequence[httpx.AsyncClient] = (),
        app: str,
        token: str,
        clock: Clock | None = None,
        limiter: RateLimiter | None = None,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.app = app
        self._http = http
        # Machine waits (long-polls, one open per watched machine) spread over these clients by
        # machine id: httpcore scans a pool's every connection on each request and response, so one
        # pool of 10,000 waits costs a core on its own, while pools of a few hundred cost nothing.
        self._waits = tuple(waits) or (http,)
        self._authorization = authorization_header(token)
        self._clock = clock or SystemClock()
        self._limiter = limiter or RateLimiter(self._clock, scale=CLIENT_MARGIN)
        self._policy = policy or RetryPolicy()

    @classmethod
    def from_settings(
        cls, settings: Settings, *, http: httpx.AsyncClient | None = None, clock: Clock | None = None
    ) -> FlyClient:
        if settings.fly_api_token is None or not settings.fly_api_token.get_secret_value().strip():
            raise ConfigError("FLY_API_TOKEN is not set; see docs/fly.md#tokens")
        waits: list[httpx.AsyncClient] = []
        if http is None:
            # No pool timeout: a burst's calls queue for a connection in order; each preview's
            # readiness deadline (CONTAINER_TIMEOUT_SECONDS), not the pool, says when it is too late.
            timeout = httpx.Timeout(30.0, pool=None)
            tls = httpx.create_ssl_context()
            http = httpx.AsyncClient(base_url=settings.fly_api_base_url, timeout=timeout, verify=tls)
            # No cap: each watched machine holds one; the server, not our pools, bounds them.
            waits = [
                httpx.AsyncClient(
                    base_url=settings.fly_api_base_url,
                    timeout=timeout,
                    verify=tls,
                    limits=httpx.Limits(max_connections=None, max_keepalive_connections=20),
                )
                for _ in range(WAIT_POOLS)
            ]
        token = settings.fly_api_token.get_secret_value()
        limiter = None if settings.fly_api_rate_limits else RateLimiter(clock, rates={}, default=UNLIMITED)
        return cls(http, waits=waits, app=settings.fly_app_name, token=token, clock=clock, limiter=limiter)

    async def aclose(self) -> None:
        await self._http.aclose()
        for waits in self._waits:
            if waits is not self._http:
                await waits.aclose()

    # --- apps and tokens ------------------------------------------------------------------------
    async def get_app(self, app: str | None = None) -> AppJSON:
        name = app or self.app
        return cast(AppJSON, await self._json("get_app", "GET", f"/v1/apps/{_q(name)}", key=name))

    async def create_app(self, request: CreateAppRequest) -> CreateAppResponse:
        response = await self._call("create_app", "POST", "/v1/apps", key="-", json=request, expect=(201,))
        return cast(CreateAppResponse, _body(response, "create_app"))

    async def current_token(self) -> CurrentTokenResponse:
        return cast(
            CurrentTokenResponse, await self._json("current_token", "GET", "/v1/tokens/current", key="-")
        )

    # --- machines -------------------------------------------------------------------------------
    async def list_machines(
        self,
        *,
        metadata: Mapping[str, str] | None = None,
        states: Iterable[str] = (),
        region: str | None = None,
        include_deleted: bool = False,
        summary: bool = False,
        page_size: int | None = None,
    ) -> list[MachineJSON]:
        params: dict[str, str] = {f"metadata.{key}": value for key, value in (metadata or {}).items()}
        if states := ",".join(states):
            params["state"] = states
        if region:
            params["region"] = region
        if include_deleted:
            params["include_deleted"] = "true"
        if summary:
            params["summary"] = "true"
        if page_size:
            params["limit"] = str(page_size)
        machines: list[MachineJSON] = []
        while True:
            response = await self._call("list", "GET", self._machines(), key=self.app, params=params)
            machines.extend(cast(list[MachineJSON], _body(response, "list", expect=list)))
            cursor = response.headers.get("fly-next-cursor")
            if not page_size or not cursor:
                return machines
            params["cursor"] = cursor

    async def get_machine(self, machine_id: str) -> MachineJSON:
        return cast(MachineJSON, await self._json("get", "GET", self._machines(machine_id), key=machine_id))

    async def create_machine(self, request: CreateMachineRequest) -> MachineJSON:
        """Create once, even when an answer is lost: a unique metadata tag finds what Fly made."""
        config: MachineConfig = {**request.get("config", {})}
        metadata = {**config.get("metadata", {})}
        tag = metadata.setdefault(META_CREATE_TAG, uuid.uuid4().hex)
        config["metadata"] = metadata
        body: CreateMachineRequest = {**request, "config": config}
        last: MaybeApplied | None = None
        for attempt in range(1, self._policy.create_attempts + 1):
            try:
                response = await self._call(
                    "create", "POST", self._machines(), key=self.app, json=body, idempotent=False
                )
                return cast(MachineJSON, _body(response, "create"))
            except MaybeApplied as exc:
                last = exc
            if (found := await self._find_created(tag)) is not None:
                return found
            await self._clock.sleep(min(self._policy.wait_max, self._policy.wait_initial * 2**attempt))
        assert last is not None
        raise last

    async def _find_created(self, tag: str) -> MachineJSON | None:
        for lookup in range(self._policy.lookup_attempts):
            if lookup:
                await self._clock.sleep(self._policy.lookup_delay)
            found = await self.list_machines(metadata={META_CREATE_TAG: tag})
            if found:
                # Were two made after all (the list lags), the oldest is kept; the reconciler owns the rest.
                return min(found, key=lambda machine: machine.get("created_at", ""))
        return None

    async def update_machine(
        self, machine_id: str, request: UpdateMachineRequest, *, nonce: str | None = None
    ) -> MachineJSON:
        response = await self._call(
            "update", "POST", self._machines(machine_id), key=machine_id, json=request,
            headers=_nonce(nonce), idempotent=False,
        )  # fmt: skip
        return cast(MachineJSON, _body(response, "update"))

    async def start_machine(self, machine_id: str, *, nonce: str | None = None) -> None:
        await self._call(
            "start", "POST", self._machines(machine_id, "start"), key=machine_id, headers=_nonce(nonce)
        )

    async def stop_machine(
        self,
        machine_id: str,
        *,
        signal: str | None = None,
        kill_timeout: float | None = None,
        nonce: str | None = None,
    ) -> None:
        """Ask the machine to stop: ``signal``, then a kill after ``kill_timeout`` seconds."""
        body: StopRequest = {}
        if signal:
            body["signal"] = signal
        if kill_timeout is not None:
            body["timeout"] = f"{max(1, math.ceil(kill_timeout))}s"
        path = self._machines(machine_id, "stop")
        await self._call("stop", "POST", path, key=machine_id, json=body, headers=_nonce(nonce))

    async def suspend_machine(self, machine_id: str, *, nonce: str | None = None) -> None:
        path = self._machines(machine_id, "suspend")
        await self._call("suspend", "POST", path, key=machine_id, headers=_nonce(nonce))

    async def destroy_machine(
        self, machine_id: str, *, force: bool = False, nonce: str | None = None
    ) -> None:
        params = {"force": "true"} if force else None
        path = self._machines(machine_id)
        await self._call("destroy", "DELETE", path, key=machine_id, params=params, headers=_nonce(nonce))

    async def wait_machine(
        self,
        machine_id: str,
        *,
        states: Sequence[str] = ("started",),
        timeout: float = 60.0,
        version: str | None = None,
        from_event_id: str | None = None,
    ) -> WaitResponse:
        """Block until one of ``states``: calls of at most 60 s each, looped inside ``timeout``.

        ``version`` or ``from_event_id`` tie the wait to our own action, so a state reached before it
        does not count. A 404 while waiting for ``destroyed`` means it is done.
        """
        params: list[tuple[str, str | int | float | bool | None]] = [("state", state) for state in states]
        if version:
            params.append(("version", version))
        if from_event_id:
            params.append(("from_event_id", from_event_id))
        deadline = self._clock.now().timestamp() + timeout
        path = self._machines(machine_id, "wait")
        while (remaining := deadline - self._clock.now().timestamp()) > 0:
            window = min(MAX_WAIT_SLICE, max(1, math.ceil(remaining)))
            try:
                response = await self._call(
                    "wait", "GET", path, key=machine_id, params=[*params, ("timeout", str(window))],
                    expect=(200, 408), read_timeout=window + 15.0,
                )  # fmt: skip
            except NotFound:
                if "destroyed" in states:
                    return {"ok": True, "state": "destroyed"}
                raise
            if response.status_code == 200:
                return cast(WaitResponse, _body(response, "wait"))
        raise Unavailable(
            f"machine {machine_id} did not reach {'/'.join(states)} within {timeout:g}s", delay=0.0
        )

    # --- leases and metadata --------------------------------------------------------------------
    async def acquire_lease(
        self, machine_id: str, *, ttl: int, description: str = "", nonce: str | None = None
    ) -> LeaseData:
        """Take the machine's lease for ``ttl`` seconds, or extend ours when given its ``nonce``."""
        response = await self._call(
            "lease", "POST", self._machines(machine_id, "lease"), key=machine_id,
            json={"ttl": ttl, "description": description}, headers=_nonce(nonce), expect=(200, 201),
            idempotent=nonce is not None,
        )  # fmt: skip
        envelope = cast(LeaseEnvelope, _body(response, "lease"))
        if envelope.get("status") != "success" or "data" not in envelope:
            raise ProviderError(f"Fly API lease on {machine_id} was refused: {envelope.get('message', '')}")
        return envelope["data"]

    async def release_lease(self, machine_id: str, nonce: str) -> None:
        path = self._machines(machine_id, "lease")
        await self._call("lease", "DELETE", path, key=machine_id, headers=_nonce(nonce))

    async def get_metadata(self, machine_id: str) -> dict[str, str]:
        path = self._machines(machine_id, "metadata")
        return cast(dict[str, str], await self._json("metadata", "GET", path, key=machine_id))

    async def set_metadata(self, machine_id: str, key: str, value: str) -> None:
        path = self._machines(machine_id, "metadata", key)
        await self._call("metadata", "POST", path, key=machine_id, json={"value": value}, expect=(200, 204))

    async def patch_metadata(self, machine_id: str, changes: dict[str, str]) -> None:
        """Set the keys ``changes`` names in one call; the others stay (``PATCH .../metadata``)."""
        path = self._machines(machine_id, "metadata")
        body = {"metadata": changes}
        await self._call("metadata", "PATCH", path, key=machine_id, json=body, expect=(200, 204))

    async def delete_metadata(self, machine_id: str, key: str) -> None:
        path = self._machines(machine_id, "metadata", key)
        await self._call("metadata", "DELETE", path, key=machine_id, expect=(200, 204))

    async def emulator_agent_endpoint(self, machine_id: str) -> dict[str, Any]:
        """The emulator's own extension (not Fly's): where a locally backed machine's agent listens."""
        path = f"/_emulator/v1/apps/{_q(self.app)}/machines/{_q(machine_id)}/agent"
        return cast(dict[str, Any], await self._json("emulator", "GET", path, key=machine_id))

    # --- plumbing -------------------------------------------------------------------------------
    def _machines(self, machine_id: str | None = None, *rest: str) -> str:
        path = f"/v1/apps/{_q(self.app)}/machines"
        if machine_id is not None:
            path += "/" + "/".join(_q(part) for part in (machine_id, *rest))
        return path

    async def _json(self, action: str, method: str, path: str, *, key: str) -> Any:
        return _body(await self._call(action, method, path, key=key), action)

    async def _call(
        self,
        action: str,
        method: str,
        path: str,
        *,
        key: str,
        params: dict[str, str] | list[tuple[str, str | int | float | bool | None]] | None = None,
        json: object = None,
        headers: Mapping[str, str] | None = None,
        expect: tuple[int, ...] = (200,),
        idempotent: bool = True,
        read_timeout: float | None = None,
    ) -> httpx.Response:
        policy = self._policy
        async for attempt in stamina.retry_context(
            on=retry_delay if idempotent else _retry_unless_applied,
            attempts=policy.attempts,
            timeout=policy.timeout,
            wait_initial=policy.wait_initial,
            wait_max=policy.wait_max,
        ):
            with attempt:
                if attempt.num > 1:
                    metrics.FLY_RETRIES.labels(action).inc()
                waited = time.monotonic()
                await self._limiter.acquire(action, key)
                metrics.FLY_RATE_WAIT.labels(action).inc(time.monotonic() - waited)
                try:
                    http = self._http
                    if action == "wait":
                        http = self._waits[zlib.crc32(key.encode()) % len(self._waits)]
                    response = await http.request(
                        method, path, params=params, json=json,
                        headers={"authorization": self._authorization, **(headers or {})},
                        timeout=read_timeout if read_timeout is not None else httpx.USE_CLIENT_DEFAULT,
                    )  # fmt: skip
                except httpx.HTTPError as exc:
                    metrics.FLY_CALLS.labels(action, "error").inc()
                    raise error_from_transport(exc, action=action) from exc
                metrics.FLY_CALLS.labels(action, str(response.status_code)).inc()
                if response.status_code not in expect:
                    error = error_from_response(response, action=action)
                    if isinstance(error, RateLimited) and error.retry_after:
                        metrics.FLY_RATE_WAIT.labels(action).inc(error.retry_after)  # stamina waits it
                    raise error
                return response
        raise AssertionError("stamina either returns or re-raises")  # pragma: no cover


def _q(part: str) -> str:
    return quote(part, safe="")


def _nonce(nonce: str | None) -> dict[str, str] | None:
    return {NONCE_HEADER: nonce} if nonce else None


def _body(response: httpx.Response, action: str, *, expect: type[Any] = dict) -> Any:
    try:
        body = response.json()
    except ValueError as exc:
        raise ProviderError(
            f"Fly API {action} answered with malformed JSON: {response.text[:200]!r}"
        ) from exc
    if not isinstance(body, expect):
        raise ProviderError(
            f"Fly API {action} answered with a {type(body).__name__}, not a {expect.__name__}"
        )
    return body
