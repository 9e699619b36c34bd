"""The machine endpoints of the Machines API, answered from the ``Fleet``.

Status codes follow the spec (create 200, lease 201, metadata 204, update conflict 409) and, where it
is silent, Fly's docs and clients: wait times out with 408, a held lease answers 409 with "lease
currently held by", destroying a running machine without ``force`` (or fly-go's ``kill``) answers 412.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from velocity.emulator.errors import ApiError, bad_request, query_bool, read_json
from velocity.emulator.faults import FaultState
from velocity.emulator.fleet import EmulatedMachine, Fleet, LeaseHeld
from velocity.emulator.render import lease_json, machine_json
from velocity.emulator.wire import InvalidRequest, normalize_config, parse_duration, parse_signal

NONCE_HEADER = "fly-machine-lease-nonce"
WAIT_STATES = frozenset({"started", "stopped", "suspended", "destroyed", "failed", "settled"})
LIST_STATES = frozenset({"created", "started", "stopped", "suspended"})
MAX_WAIT = 60
CAPACITY_MESSAGE = (
    "could not reserve resource for machine: insufficient resources available to fulfill request"
)


class MachinesAPI:
    def __init__(self, fleet: Fleet, faults: FaultState, *, default_region: str, owner: str) -> None:
        self.fleet = fleet
        self.faults = faults
        self.default_region = default_region
        self.owner = owner

    def machine(self, request: Request, *, include_destroyed: bool = False) -> EmulatedMachine:
        machine = self.fleet.machines.get(request.path_params["machine_id"])
        if machine is None or machine.app != request.path_params["app"]:
            raise ApiError(404, "machine not found")
        if machine.state == "destroyed" and not include_destroyed:
            raise ApiError(404, "machine not found")
        return machine

    def _lease_check(self, request: Request, machine: EmulatedMachine) -> None:
        try:
            self.fleet.lease_check(machine, request.headers.get(NONCE_HEADER))
        except LeaseHeld as exc:
            raise ApiError(409, str(exc)) from exc

    # --- CRUD -----------------------------------------------------------------------------------
    async def create(self, request: Request) -> Response:
        body = await read_json(request, go_type="main.createMachineRequest")
        try:
            config = normalize_config(body.get("config"))
        except InvalidRequest as exc:
            raise bad_request(exc) from exc
        region = body.get("region") or self.default_region
        if region in self.faults.faults.full_regions:
            raise ApiError(422, f"{CAPACITY_MESSAGE} in region {region}", fly_status="insufficient_capacity")
        machine = await self.fleet.add(
            app=request.path_params["app"],
            region=region,
            config=config,
            name=body.get("name"),
            launch=not body.get("skip_launch", False),
        )
        answer = machine_json(machine)
        if ttl := body.get("lease_ttl"):
            answer["nonce"] = self.fleet.acquire_lease(
                machine, ttl=int(ttl), description="", owner=self.owner, nonce=None
            ).nonce
        if self.faults.take_lost_create():
            # The machine exists; only the answer is lost, as when a proxy times out after the commit.
            raise ApiError(self.faults.faults.lost_create_status, "upstream request timeout")
        return JSONResponse(answer)

    async def list(self, request: Request) -> Response:
        params = request.query_params
        include_deleted = query_bool(request, "include_deleted")
        states = {s for s in params.get("state", "").split(",") if s}
        if unknown := states - LIST_STATES:
            raise ApiError(
                400, f"invalid state filter {sorted(unknown)}; use {', '.join(sorted(LIST_STATES))}"
            )
        wanted = {k.removeprefix("metadata."): v for k, v in params.items() if k.startswith("metadata.")}
        found = [
            m
            for m in self.fleet.machines.values()
            if m.app == request.path_params["app"]
            and (include_deleted or m.state != "destroyed")
            and (not states or m.state in states)
            and params.get("region", m.region) == m.region
            and wanted.items() <= m.config.get("metadata", {}).items()
        ]
        headers: dict[str, str] = {}
        if "limit" in params:
            limit, start = _page(params.get("limit", ""), params.get("cursor"))
            if start + limit < len(found):
                headers["fly-next-cursor"] = base64.urlsafe_b64encode(str(start + limit).encode()).decode()
            found = found[start : start + limit]
        summary = query_bool(request, "summary")
        include_leases = query_bool(request, "include_leases")
        return JSONResponse(
            [
                machine_json(m, summary=summary, lease=self.fleet.active_lease(m) if include_leases else None)
                for m in found
            ],
            headers=headers,
        )

    async def get(self, request: Request) -> Response:
        machine = self.machine(request)
        version = request.query_params.get("version")
        if version and version != machine.version and version not in machine.versions:
            raise ApiError(404, f"machine version {version} not found")
        lease = self.fleet.active_lease(machine) if query_bool(request, "include_leases") else None
        checks = await self.fleet.checks(machine)
        return JSONResponse(machine_json(machine, lease=lease, checks=checks, version=version))

    async def update(self, request: Request) -> Response:
        machine = self.machine(request)
        body = await read_json(request, go_type="main.updateMachineRequest")
        self._lease_check(request, machine)
        if (current := body.get("current_version")) and current != machine.version:
            raise ApiError(409, f"machine version {current} is not the current version {machine.version}")
        for immutable in ("region", "name"):
            if body.get(immutable) and body[immutable] != getattr(machine, immutable):
                raise ApiError(400, f"{immutable} cannot be changed on update")
        try:
            config = normalize_config(body.get("config"))
        except InvalidRequest as exc:
            raise bad_request(exc) from exc
        self.fleet.update(machine, config, launch=not body.get("skip_launch", False))
        return JSONResponse(machine_json(machine))

    async def destroy(self, request: Request) -> Response:
        machine = self.machine(request)
        self._lease_check(request, machine)
        # The spec and docs say ``force``; fly-go sends ``kill``.
        forced = query_bool(request, "force") or query_bool(request, "kill")
        if machine.state in ("started", "starting") and not forced:
            raise ApiError(
                412, "unable to destroy machine, not currently stopped, suspended or created; use force"
            )
        self.fleet.destroy(machine)
        return JSONResponse({"ok": True})

    # --- lifecycle ------------------------------------------------------------------------------
    async def start(self, request: Request) -> Response:
        machine = self.machine(request)
        self._lease_check(request, machine)
        previous = machine.state
        if previous in ("destroying", "replacing"):
            raise ApiError(412, f"unable to start machine from current state: '{previous}'")
        self.fleet.start(machine)
        return JSONResponse({"previous_state": previous, "migrated": False, "new_host": ""})

    async def stop(self, request: Request) -> Response:
        machine = self.machine(request)
        body = await read_json(request, go_type="main.stopRequest", required=False) or {}
        stop_config = machine.config.get("stop_config") or {}
        try:
            signal = parse_signal(body.get("signal") or stop_config.get("signal") or "SIGINT")
            kill_after = parse_duration(
                body.get("timeout") or stop_config.get("timeout") or "5s", what="timeout"
            )
        except InvalidRequest as exc:
            raise bad_request(exc) from exc
        self._lease_check(request, machine)
        self.fleet.stop(machine, signal=signal, kill_after=kill_after)
        return JSONResponse({"ok": True})

    async def suspend(self, request: Request) -> Response:
        machine = self.machine(request)
        self._lease_check(request, machine)
        if machine.state != "started":
            raise ApiError(412, f"unable to suspend machine from current state: '{machine.state}'")
        self.fleet.suspend(machine)
        return JSONResponse({"ok": True})

    async def wait(self, request: Request) -> Response:
        machine = self.machine(request, include_destroyed=True)
        params = request.query_params
        states = frozenset(s for value in params.getlist("state") for s in value.split(",") if s) or {
            "started"
        }
        if unknown := states - WAIT_STATES:
            raise ApiError(400, f"invalid state {sorted(unknown)}; use {', '.join(sorted(WAIT_STATES))}")
        try:
            timeout = min(MAX_WAIT, max(1, int(params.get("timeout", MAX_WAIT))))
        except ValueError as exc:
            raise ApiError(400, f"invalid timeout {params.get('timeout')!r}: integer seconds") from exc
        version = params.get("version") or params.get("instance_id")
        if version and version != machine.version:
            raise ApiError(400, f"machine {machine.id} version {version} is currently replaced")
        try:
            async with asyncio.timeout(timeout):
                state, event_id = await self.fleet.wait(
                    machine, frozenset(states), after_event=params.get("from_event_id")
                )
        except TimeoutError:
            wanted = "/".join(sorted(states))
            raise ApiError(
                408, f"deadline_exceeded: machine {machine.id} did not reach {wanted} in {timeout}s"
            ) from None
        answer = {"ok": True, "state": state, "version": machine.version}
        if event_id:
            answer["event_id"] = event_id
        return JSONResponse(answer)

    async def events(self, request: Request) -> Response:
        machine = self.machine(request, include_destroyed=True)
        limit = request.query_params.get("limit", "")
        return JSONResponse(machine.events[: int(limit)] if limit.isdigit() else machine.events)

    # --- leases ---------------------------------------------------------------------------------
    async def acquire_lease(self, request: Request) -> Response:
        machine = self.machine(request)
        body = await read_json(request, go_type="main.createLeaseRequest", required=False) or {}
        # The docs send the ttl in the body; fly-go sends it as ?ttl= with no body.
        ttl = body.get("ttl") or request.query_params.get("ttl") or 30
        try:
            lease = self.fleet.acquire_lease(
                machine,
                ttl=int(ttl),
                description=str(body.get("description", "")),
                owner=self.owner,
                nonce=request.headers.get(NONCE_HEADER),
            )
        except LeaseHeld as exc:
            raise ApiError(409, str(exc)) from exc
        except ValueError as exc:
            raise ApiError(400, f"invalid ttl {ttl!r}") from exc
        return JSONResponse(lease_json(lease), status_code=201)

    async def show_lease(self, request: Request) -> Response:
        lease = self.fleet.active_lease(self.machine(request))
        if lease is None:
            raise ApiError(404, "lease not found")
        return JSONResponse(lease_json(lease))

    async def release_lease(self, request: Request) -> Response:
        machine = self.machine(request)
        nonce = request.headers.get(NONCE_HEADER)
        if not nonce:
            raise ApiError(400, f"missing {NONCE_HEADER} header")
        self._lease_check(request, machine)
        machine.lease = None
        return JSONResponse({"ok": True})

    # --- metadata -------------------------------------------------------------------------------
    async def metadata(self, request: Request) -> Response:
        return JSONResponse(self.machine(request).config.get("metadata", {}))

    async def update_metadata(self, request: Request) -> Response:
        machine = self.machine(request)
        body = await read_json(request, go_type="main.updateMetadataRequest")
        if (version := body.get("machine_version")) and version != machine.version:
            raise ApiError(412, f"machine version {version} is not the current version {machine.version}")
        changes = body.get("metadata") or {}
        if not isinstance(changes, dict):
            raise ApiError(400, "json: cannot unmarshal metadata into Go value of type map[string]string")
        metadata: dict[str, Any] = machine.config.setdefault("metadata", {})
        for key, value in changes.items():
            if value is None or value == "":
                metadata.pop(key, None)
            else:
                metadata[key] = str(value)
        return Response(status_code=204)

    async def metadata_key(self, request: Request) -> Response:
        metadata = self.machine(request).config.get("metadata", {})
        key = request.path_params["key"]
        if key not in metadata:
            raise ApiError(404, f"metadata key {key} not found")
        return JSONResponse({"value": metadata[key]})

    async def set_metadata_key(self, request: Request) -> Response:
        machine = self.machine(request)
        body = await read_json(request, go_type="main.upsertMetadataKeyRequest")
        if not isinstance(body.get("value"), str):
            raise ApiError(400, "value must be a string")
        machine.config.setdefault("metadata", {})[request.path_params["key"]] = body["value"]
        return Response(status_code=204)

    async def delete_metadata_key(self, request: Request) -> Response:
        self.machine(request).config.get("metadata", {}).pop(request.path_params["key"], None)
        return Response(status_code=204)


def _page(limit: str, cursor: str | None) -> tuple[int, int]:
    try:
        size = int(limit)
        start = int(base64.urlsafe_b64decode(cursor.encode()).decode()) if cursor else 0
    except ValueError as exc:
        raise ApiError(400, "invalid limit or cursor") from exc
    if not 1 <= size <= 1000:
        raise ApiError(400, "limit must be between 1 and 1000")
    return size, start
