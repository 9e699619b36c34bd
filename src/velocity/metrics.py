"""The orchestrator's Prometheus metrics, defined once, in a registry of their own.

Counters and histograms are updated where things happen (the service, the Fly client, the router,
the loops); gauges of what exists now (previews by state, machines by state and region) are read
at each scrape (``api`` refreshes them before rendering). ``deploy/grafana/velocity.json`` charts
them, and a test holds every query there to a metric defined here.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

# --- previews -------------------------------------------------------------------------------------
PREVIEWS = Gauge(
    "velocity_previews", "Previews by state, as the database holds them", ["state"], registry=REGISTRY
)
PREVIEW_CREATES = Counter(
    "velocity_preview_creates_total",
    "Preview creates by outcome: created, existing (the live one returned), quota, rate_limited",
    ["outcome"],
    registry=REGISTRY,
)
TIME_TO_READY = Histogram(
    "velocity_preview_ready_seconds",
    "From the create to the preview serving",
    buckets=(0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, 60, 120, 300),
    registry=REGISTRY,
)
RESUME_SECONDS = Histogram(
    "velocity_preview_resume_seconds",
    "From the first request to a suspended preview to it serving again",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
    registry=REGISTRY,
)
MACHINE_CREATE = Histogram(
    "velocity_machine_create_seconds",
    "How long the provider took to create a machine",
    ["provider"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
    registry=REGISTRY,
)
PREVIEW_ENDS = Counter(
    "velocity_preview_ends_total",
    "Previews ended, by state (stopped, failed) and reason (deleted, lifetime, idle, failed_boot, "
    "machine_gone, shutdown, other)",
    ["state", "reason"],
    registry=REGISTRY,
)

# --- machines -------------------------------------------------------------------------------------
POOL_MACHINES = Gauge(
    "velocity_pool_machines",
    "Warm-pool machines by state (provisioning, booting, ready, claimed)",
    ["state"],
    registry=REGISTRY,
)
POOL_CLAIMS = Counter(
    "velocity_pool_claims_total",
    "Creates that asked the warm pool: warm (the dev server kept), installed (dependencies differed), "
    "empty (none ready) or failed (the machine was destroyed and one created)",
    ["outcome"],
    registry=REGISTRY,
)
POOL_BOOT_FAILURES = Counter(
    "velocity_pool_boot_failures_total",
    "Pooled machines that did not boot the template",
    registry=REGISTRY,
)
MACHINES = Gauge(
    "velocity_machines",
    "Machines of ours by provider, region and state",
    ["provider", "region", "state"],
    registry=REGISTRY,
)
MACHINE_SECONDS = Counter(
    "velocity_machine_seconds_total",
    "Machine time of live previews by how it was spent: running_active (a request or frame in the "
    "last minute), running_idle, booting, suspended (frozen: memory and disk, no CPU)",
    ["state"],
    registry=REGISTRY,
)

# --- maintenance ----------------------------------------------------------------------------------
MAINTENANCE_ACTIONS = Counter(
    "velocity_maintenance_actions_total",
    "What the reaper and the reconciler did, by action (stop, fail, destroy, adopt) and reason "
    "(lifetime, idle, failed_boot, orphan, stuck, machine_gone, booting, ready)",
    ["action", "reason"],
    registry=REGISTRY,
)
MAINTENANCE_PASS = Histogram(
    "velocity_maintenance_pass_seconds",
    "How long a maintenance pass took (on the leader)",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
    registry=REGISTRY,
)
MAINTENANCE_FAILURES = Counter(
    "velocity_maintenance_failures_total",
    "Maintenance passes that failed on the provider or the database",
    registry=REGISTRY,
)
LEADER = Gauge("velocity_leader", "1 while this replica runs the maintenance loops", registry=REGISTRY)

# --- the Fly API ----------------------------------------------------------------------------------
FLY_CALLS = Counter(
    "velocity_fly_api_calls_total",
    "Machines API calls by action and HTTP status (error: no answer)",
    ["action", "status"],
    registry=REGISTRY,
)
FLY_RETRIES = Counter(
    "velocity_fly_api_retries_total",
    "Machines API calls sent again, by action",
    ["action"],
    registry=REGISTRY,
)
FLY_RATE_WAIT = Counter(
    "velocity_fly_api_rate_limit_wait_seconds_total",
    "Time spent waiting for the Machines API's rate limits (ours and Fly's 429s), by action",
    ["action"],
    registry=REGISTRY,
)

# --- the router -----------------------------------------------------------------------------------
ROUTER_REQUESTS = Counter(
    "velocity_router_requests_total",
    "Requests to previews through the router, by kind (http, websocket) and outcome (proxied, "
    "replayed, refused)",
    ["kind", "outcome"],
    registry=REGISTRY,
)
ROUTER_BYTES = Counter(
    "velocity_router_bytes_total",
    "Bytes through the router, by direction (to_preview, from_preview)",
    ["direction"],
    registry=REGISTRY,
)
ROUTER_WEBSOCKETS = Gauge(
    "velocity_router_websockets", "Websockets open through the router", registry=REGISTRY
)
