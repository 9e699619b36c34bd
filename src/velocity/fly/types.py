"""The Machines API's JSON, as ``TypedDict``s: the shapes at the edge, never passed further in.

Field names and optionality follow ``fly-machines-openapi.yaml`` (every property there is optional);
only the fields we read or write are listed. Where Fly's wire format differs from the spec (the lease
envelope, ``autostop`` booleans, durations as strings), the comment says so.
"""

from __future__ import annotations

from typing import Literal, TypedDict

# Durations ("10s", "1m30s") are Go durations marshalled as strings; Fly also accepts nanoseconds.
Duration = str

# What ``services[].autostop`` looks like on the wire: responses say false/true for off/stop.
Autostop = bool | Literal["off", "stop", "suspend"]


class GuestConfig(TypedDict, total=False):
    cpu_kind: str
    cpus: int
    memory_mb: int


RestartPolicy = Literal["no", "always", "on-failure"]


class RestartConfig(TypedDict, total=False):
    policy: RestartPolicy
    max_retries: int


class StopConfig(TypedDict, total=False):
    signal: str
    timeout: Duration


class ServiceCheck(TypedDict, total=False):
    type: Literal["tcp", "http"]
    port: int
    interval: Duration
    timeout: Duration
    grace_period: Duration
    method: str
    path: str
    protocol: Literal["http", "https"]


class PortConfig(TypedDict, total=False):
    port: int
    handlers: list[str]
    force_https: bool


class Concurrency(TypedDict, total=False):
    type: Literal["connections", "requests"]
    soft_limit: int
    hard_limit: int


class ServiceConfig(TypedDict, total=False):
    protocol: Literal["tcp", "udp"]
    internal_port: int
    ports: list[PortConfig]
    autostart: bool
    autostop: Autostop
    min_machines_running: int
    concurrency: Concurrency
    checks: list[ServiceCheck]


class MachineConfig(TypedDict, total=False):
    image: str
    env: dict[str, str]
    guest: GuestConfig
    auto_destroy: bool
    restart: RestartConfig
    stop_config: StopConfig
    services: list[ServiceConfig]
    checks: dict[str, ServiceCheck]
    metadata: dict[str, str]
    init: dict[str, object]
    dns: dict[str, object]


class CreateMachineRequest(TypedDict, total=False):
    config: MachineConfig
    name: str
    region: str
    skip_launch: bool
    lease_ttl: int


class UpdateMachineRequest(CreateMachineRequest, total=False):
    current_version: str


class MachineEvent(TypedDict, total=False):
    id: str
    type: str
    status: str
    source: Literal["user", "flyd"]
    timestamp: int  # epoch milliseconds
    request: dict[str, object]


class CheckStatus(TypedDict, total=False):
    name: str
    status: Literal["passing", "warning", "critical"]
    output: str
    updated_at: str


class ImageRef(TypedDict, total=False):
    registry: str
    repository: str
    tag: str
    digest: str
    labels: dict[str, str]


class StrippedLease(TypedDict, total=False):
    owner: str
    expires_at: int
    description: str


class MachineJSON(TypedDict, total=False):
    id: str
    name: str
    state: str
    region: str
    instance_id: str
    version: str
    private_ip: str
    created_at: str  # RFC 3339, second precision
    updated_at: str
    config: MachineConfig
    image_ref: ImageRef
    events: list[MachineEvent]
    checks: list[CheckStatus]
    nonce: str
    lease: StrippedLease
    host_status: Literal["ok", "unknown", "unreachable"]
    cordoned: bool


class WaitResponse(TypedDict, total=False):
    ok: bool
    state: str
    version: str
    event_id: str


class StopRequest(TypedDict, total=False):
    signal: str
    timeout: Duration


class LeaseData(TypedDict, total=False):
    nonce: str
    expires_at: int  # epoch seconds
    owner: str
    description: str
    version: str


class LeaseEnvelope(TypedDict, total=False):
    """The lease as Fly sends it: wrapped, unlike the spec's flat ``Lease``."""

    status: str
    data: LeaseData
    message: str
    code: str


class Organization(TypedDict, total=False):
    name: str
    slug: str


class AppJSON(TypedDict, total=False):
    id: str
    name: str
    status: str
    network: str
    machine_count: int
    organization: Organization


class CreateAppRequest(TypedDict, total=False):
    name: str
    org_slug: str
    network: str


class CreateAppResponse(TypedDict, total=False):
    id: str
    created_at: int


class TokenInfo(TypedDict, total=False):
    org_slug: str
    organization: str
    apps: list[str]
    token_id: str
    user: str


class CurrentTokenResponse(TypedDict, total=False):
    tokens: list[TokenInfo]


class ErrorBody(TypedDict, total=False):
    error: str
    status: str
    message: str  # fly-go reads it when present, in preference to ``error``
