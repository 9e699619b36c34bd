"""Every setting, read once from the environment and a ``.env`` file, validated, documented.

Names follow the seed deployment guide (``FLY_API_TOKEN``, ``CONTAINER_MEMORY_MB``...) plus our own.
A bad value stops the start with a ``ConfigError`` naming the variable. README.md lists them all;
``tests/test_settings.py`` fails when the two drift apart.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from velocity.domain import ConfigError
from velocity.egress.policy import parse_allowlist


class ProviderKind(enum.StrEnum):
    LOCAL = "local"
    FLY = "fly"


class Settings(BaseSettings):
    """One flat object; fields are grouped by comment, each names its variable, unit and default."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    # --- Fly.io (seed guide, step 7) -------------------------------------------------------------
    fly_api_token: SecretStr | None = Field(
        None, description="FLY_API_TOKEN: Fly.io token that manages machines"
    )
    fly_app_name: str = Field(
        "velocity-preview-containers", description="FLY_APP_NAME: the Fly app preview machines live in"
    )
    fly_api_base_url: str = Field(
        "https://api.machines.dev",
        description="FLY_API_BASE_URL: Machines API base URL (the emulator's locally)",
    )
    fly_regions: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["ord"],
        description="FLY_REGIONS: comma-separated regions, tried in order when one lacks capacity",
    )
    preview_container_image: str = Field(
        "ghcr.io/velocity/preview-container:latest",
        description="PREVIEW_CONTAINER_IMAGE: preview machine image",
    )
    velocity_fly_app_name: str | None = Field(
        None,
        description="VELOCITY_FLY_APP_NAME: the preview machines' app, when the orchestrator itself runs on "
        "Fly (there Fly sets FLY_APP_NAME to the orchestrator's own app); wins over FLY_APP_NAME",
    )
    fly_agent_route: Literal["private-network", "emulator"] = Field(
        "private-network",
        description="FLY_AGENT_ROUTE: how agents are reached: private-network (<id>.vm.<app>.internal) "
        "or emulator (the Fly emulator says where its sandbox listens)",
    )
    fly_api_rate_limits: bool = Field(
        True,
        description="FLY_API_RATE_LIMITS: pace Machines API calls to Fly's documented rates; false only "
        "against an emulator run with --no-rate-limits (load benchmarks)",
    )
    fly_machine_id: str | None = Field(
        None,
        description="FLY_MACHINE_ID: set by Fly on its machines; there, with PREVIEW_PROVIDER=fly, the "
        "router answers preview requests with fly-replay instead of proxying them",
    )

    # --- Machine size and networking (seed guide) ------------------------------------------------
    container_memory_mb: int = Field(
        512, ge=128, le=65536, description="CONTAINER_MEMORY_MB: memory per machine, MiB"
    )
    container_disk_mb: int = Field(
        2048,
        ge=64,
        le=1048576,
        description="CONTAINER_DISK_MB: what a local sandbox may write to its workspace, MiB (a disk "
        "of its own; writes beyond fail with ENOSPC)",
    )
    container_cpu_count: int = Field(1, ge=1, le=16, description="CONTAINER_CPU_COUNT: vCPUs per machine")
    container_cpu_kind: str = Field(
        "shared", pattern="^(shared|performance)$", description="CONTAINER_CPU_KIND: shared or performance"
    )
    container_internal_port: int = Field(
        8080, ge=1, le=65535, description="CONTAINER_INTERNAL_PORT: the agent's port inside a machine"
    )
    container_timeout_seconds: int = Field(
        300, ge=5, description="CONTAINER_TIMEOUT_SECONDS: a machine not serving by then is destroyed"
    )
    preview_egress_allowlist: Annotated[list[str] | None, NoDecode] = Field(
        None,
        description="PREVIEW_EGRESS_ALLOWLIST: comma-separated host, host:port or *.domain previews may "
        "reach through the egress proxy (an internal address only when listed itself); unset: the npm "
        "registry's host and SUPABASE_URL's (docs/security.md)",
    )

    # --- Lifecycle (seed guide) ------------------------------------------------------------------
    max_containers_per_user: int = Field(
        3, ge=1, description="MAX_CONTAINERS_PER_USER: live previews per user"
    )
    max_container_lifetime_minutes: int = Field(
        60, ge=1, description="MAX_CONTAINER_LIFETIME_MINUTES: hard limit, whatever the activity"
    )
    container_cleanup_interval_minutes: float = Field(
        5, gt=0, description="CONTAINER_CLEANUP_INTERVAL_MINUTES: reaper and reconciler period"
    )
    stuck_machine_minutes: float = Field(
        60,
        gt=0,
        description="STUCK_MACHINE_MINUTES: a machine of ours this long in a transient state (starting, "
        "stopping, destroying...) is destroyed and reported",
    )
    preview_create_rate_per_minute: float = Field(
        20, gt=0, description="PREVIEW_CREATE_RATE_PER_MINUTE: preview creates a user may make per minute"
    )
    preview_create_burst: int = Field(
        10, ge=1, description="PREVIEW_CREATE_BURST: creates a user may make at once before the rate applies"
    )
    preview_access: str = Field(
        "private",
        pattern="^(private|public)$",
        description="PREVIEW_ACCESS: private (a signed link or the owner's token is needed) or public",
    )
    preview_access_link_seconds: int = Field(
        300, ge=10, description="PREVIEW_ACCESS_LINK_SECONDS: how long a signed preview link may be opened"
    )
    preview_idle_timeout_minutes: float = Field(
        15,
        gt=0,
        description="PREVIEW_IDLE_TIMEOUT_MINUTES: no request, frame or keepalive for this long suspends "
        "it (PREVIEW_IDLE_ACTION)",
    )
    preview_idle_action: str = Field(
        "suspend",
        pattern="^(suspend|stop)$",
        description="PREVIEW_IDLE_ACTION: suspend an idle preview's machine until its next request "
        "(locally the cgroup freezer; on Fly `suspend`, or a stop above 2 GB), or stop it for good",
    )

    # --- Warm pool -------------------------------------------------------------------------------
    warm_pool_size: int = Field(
        0,
        ge=0,
        le=1000,
        description="WARM_POOL_SIZE: machines booted ahead with the template's dev server running "
        "(per region on Fly), each claimed by one new preview; 0: none",
    )
    warm_pool_template: Path | None = Field(
        None,
        description="WARM_POOL_TEMPLATE: the project directory pooled machines boot (its dependencies "
        "installed, its dev server running); the bundled examples/react-vite when unset",
    )
    max_machines: int = Field(
        100,
        ge=1,
        description="MAX_MACHINES: the warm pool refills only while fewer machines of ours exist "
        "(previews' and pooled), protecting the bill",
    )

    # --- Supabase (seed guide) -------------------------------------------------------------------
    supabase_url: str | None = Field(
        None, description="SUPABASE_URL: Realtime and Auth base URL; the embedded hub when unset"
    )
    supabase_anon_key: SecretStr | None = Field(
        None, description="SUPABASE_ANON_KEY: public anon key; minted from the local secret when unset"
    )
    supabase_jwt_secret: SecretStr | None = Field(
        None, description="SUPABASE_JWT_SECRET: HS256 secret of user tokens; generated locally when unset"
    )

    # --- Orchestrator ----------------------------------------------------------------------------
    preview_provider: ProviderKind = Field(
        ProviderKind.LOCAL, description="PREVIEW_PROVIDER: local (bubblewrap sandboxes) or fly"
    )
    database_url: str | None = Field(
        None, description="DATABASE_URL: SQLAlchemy URL; a SQLite file in the data directory when unset"
    )
    velocity_data_dir: Path = Field(
        Path(".velocity"), description="VELOCITY_DATA_DIR: state, secrets, projects, sandboxes, caches"
    )
    velocity_host: str = Field("127.0.0.1", description="VELOCITY_HOST: address the orchestrator listens on")
    velocity_port: int = Field(
        8000, ge=0, le=65535, description="VELOCITY_PORT: port the orchestrator listens on"
    )
    preview_domain: str = Field(
        "preview.localhost", description="PREVIEW_DOMAIN: previews answer at {preview_id}.{PREVIEW_DOMAIN}"
    )
    velocity_public_url: str | None = Field(
        None,
        description="VELOCITY_PUBLIC_URL: how agents and browsers reach the orchestrator; derived when unset",
    )
    max_request_body_bytes: int = Field(
        1 << 20, ge=1024, description="MAX_REQUEST_BODY_BYTES: largest API request body"
    )
    max_project_bytes: int = Field(
        50 << 20, ge=1024, description="MAX_PROJECT_BYTES: largest project snapshot"
    )
    velocity_instance_id: str | None = Field(
        None,
        description="VELOCITY_INSTANCE_ID: this replica's name, kept across restarts (default: FLY_MACHINE_ID, else host, pid and a random suffix)",
    )
    local_sandbox_uid: int = Field(
        65534,
        ge=1,
        description="LOCAL_SANDBOX_UID: uid (and gid) of the project's code in sandboxes started by root",
    )
    local_agent_uid: int = Field(
        65533,
        ge=1,
        description="LOCAL_AGENT_UID: uid of the agent in sandboxes started by root (in the project's group)",
    )
    local_npm_cache_dir: Path | None = Field(
        None,
        description="LOCAL_NPM_CACHE_DIR: where local sandboxes' npm caches live, one per user; data dir's cache/npm when unset",
    )
    local_npm_cache_mb: int = Field(
        2048,
        ge=64,
        description="LOCAL_NPM_CACHE_MB: each user's npm cache, MiB (a disk of its own, started afresh "
        "when over 80% full at the end of the user's last sandbox)",
    )
    local_modules_cache_dir: Path | None = Field(
        None,
        description="LOCAL_MODULES_CACHE_DIR: installed node_modules kept per owner and lockfile; "
        "data dir's cache/modules when unset",
    )
    local_modules_cache_entries: int = Field(
        20, ge=0, description="LOCAL_MODULES_CACHE_ENTRIES: how many node_modules to keep (0: no cache)"
    )
    local_sandbox_pids_max: int = Field(
        512, ge=16, description="LOCAL_SANDBOX_PIDS_MAX: processes and threads per local sandbox"
    )
    local_sandbox_allow_unisolated: bool = Field(
        False,
        description="LOCAL_SANDBOX_ALLOW_UNISOLATED: run previews without bubblewrap where it is missing",
    )

    @field_validator("fly_regions", mode="before")
    @classmethod
    def _split_regions(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("preview_egress_allowlist", mode="before")
    @classmethod
    def _split_allowlist(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("preview_egress_allowlist")
    @classmethod
    def _allowlist_entries(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            parse_allowlist(value)  # a ValueError names the bad entry
        return value

    @model_validator(mode="after")
    def _two_sandbox_uids(self) -> Settings:
        if self.local_agent_uid == self.local_sandbox_uid:
            raise ValueError(
                "LOCAL_AGENT_UID and LOCAL_SANDBOX_UID must differ: the agent and the project's code "
                "are two users, so that the project's code cannot signal or read the agent"
            )
        return self

    @model_validator(mode="after")
    def _preview_app_on_fly(self) -> Settings:
        """On a Fly machine FLY_APP_NAME names the orchestrator's own app: machines made there would
        land beside the orchestrator. VELOCITY_FLY_APP_NAME says where they belong."""
        if self.velocity_fly_app_name:
            self.fly_app_name = self.velocity_fly_app_name
        elif self.fly_machine_id and self.preview_provider == ProviderKind.FLY:
            raise ValueError(
                "VELOCITY_FLY_APP_NAME must be set on Fly: FLY_APP_NAME there is this orchestrator's own app "
                f"({self.fly_app_name!r}); set it to the preview machines' app, e.g. velocity-preview-containers"
            )
        return self

    @model_validator(mode="after")
    def _shared_database_on_fly(self) -> Settings:
        """On Fly the default SQLite file would live on one machine's disk, gone at the next deploy,
        and the kit's two orchestrator machines would each take the other's preview machines for
        orphans: the database must be named (PostgreSQL for two or more machines)."""
        if self.fly_machine_id and self.preview_provider == ProviderKind.FLY and not self.database_url:
            raise ValueError(
                "DATABASE_URL must be set on Fly: the orchestrator's machines share their previews through "
                "it (PostgreSQL; `fly secrets set DATABASE_URL=postgresql://...`, docs/deploy-fly.md step 7)"
            )
        return self

    @field_validator("preview_domain")
    @classmethod
    def _domain_is_hostname(cls, value: str) -> str:
        if not value or "/" in value or ":" in value:
            raise ValueError("must be a bare host name such as preview.example.com")
        return value.lower().strip(".")

    log_format: Literal["auto", "json", "console"] = Field(
        "auto",
        description="LOG_FORMAT: json (one object per line), console (key=value text), or auto: "
        "console in a terminal, json otherwise",
    )
    machine_hourly_cost_usd: float = Field(
        0.0079,
        ge=0,
        description="MACHINE_HOURLY_COST_USD: what one preview machine costs an hour, for the dashboard's "
        "cost so far (default: Fly's shared-cpu-1x with 1 GB)",
    )

    # --- Webhooks (docs/operations.md) ------------------------------------------------------------
    webhook_url: str | None = Field(
        None,
        description="WEBHOOK_URL: where preview events are POSTed, signed (created, ready, suspended, "
        "failed, stopped); none when unset",
    )
    webhook_secret: SecretStr | None = Field(
        None, description="WEBHOOK_SECRET: the HMAC-SHA256 key of the Velocity-Signature header"
    )
    webhook_max_attempts: int = Field(
        8, ge=1, description="WEBHOOK_MAX_ATTEMPTS: attempts per event before it is given up on"
    )
    webhook_retry_seconds: float = Field(
        1.0, gt=0, description="WEBHOOK_RETRY_SECONDS: the first retry's delay, doubled each time (to 60 s)"
    )

    @model_validator(mode="after")
    def _signed_webhooks(self) -> Settings:
        if self.webhook_url is not None:
            if not self.webhook_url.startswith(("http://", "https://")):
                raise ValueError(f"WEBHOOK_URL must be an http(s) URL, not {self.webhook_url[:80]!r}")
            if self.webhook_secret is None or not self.webhook_secret.get_secret_value():
                raise ValueError("WEBHOOK_URL is set but WEBHOOK_SECRET is not: webhooks are always signed")
        return self

    # --- Derived values ---------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.velocity_data_dir.resolve()

    @property
    def npm_cache_dir(self) -> Path:
        return (self.local_npm_cache_dir or self.data_dir / "cache" / "npm").resolve()

    @property
    def modules_cache_dir(self) -> Path | None:
        if self.local_modules_cache_entries == 0:
            return None
        return (self.local_modules_cache_dir or self.data_dir / "cache" / "modules").resolve()

    @property
    def fly_replay(self) -> bool:
        """Whether the router hands preview requests to Fly's proxy (``fly-replay``) instead of proxying:
        only on Fly, where that proxy is in front of us and the machines are real Fly machines."""
        return (
            self.preview_provider == ProviderKind.FLY
            and bool(self.fly_machine_id)
            and self.fly_agent_route == "private-network"
        )

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return _async_driver(self.database_url)
        return f"sqlite+aiosqlite:///{self.data_dir / 'velocity.db'}"

    @property
    def orchestrator_url(self) -> str:
        return (self.velocity_public_url or f"http://127.0.0.1:{self.velocity_port}").rstrip("/")

    @property
    def lifetime_seconds(self) -> float:
        return self.max_container_lifetime_minutes * 60.0

    @property
    def idle_timeout_seconds(self) -> float:
        return self.preview_idle_timeout_minutes * 60.0

    @property
    def cleanup_interval_seconds(self) -> float:
        return self.container_cleanup_interval_minutes * 60.0

    def preview_url(self, preview_id: str) -> str:
        scheme = "http" if self.preview_domain.endswith("localhost") else "https"
        port = f":{self.velocity_port}" if scheme == "http" else ""
        return f"{scheme}://{preview_id}.{self.preview_domain}{port}/"


def _async_driver(url: str) -> str:
    """Accept the URLs people paste (``postgres://``, ``postgresql://``) and pick the async driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url[len("sqlite:///") :]
    return url


def settings_table() -> str:
    """The Markdown table of every setting, as README.md shows it (a test keeps the two equal)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for field in Settings.model_fields.values():
        variable, _, meaning = (field.description or "").partition(": ")
        default: Any = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
        if isinstance(default, list):
            default = ",".join(default)
        shown = "(unset)" if default is None else str(getattr(default, "value", default))
        rows.append(f"| `{variable}` | `{shown}` | {meaning} |")
    return "\n".join(rows)


def load_settings(**overrides: Any) -> Settings:
    """Read the settings, turning validation errors into one ``ConfigError`` naming each variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            if not error["loc"]:  # a check across several settings: its message names them
                problems.append(str(error["msg"]).removeprefix("Value error, "))
                continue
            field = str(error["loc"][0])
            secret = (
                "SecretStr" in str(Settings.model_fields[field].annotation)
                if field in Settings.model_fields
                else True
            )
            shown = "" if secret else f" (got {error.get('input')!r})"
            problems.append(f"{field.upper()}: {error['msg']}{shown}")
        raise ConfigError("invalid settings: " + "; ".join(problems) + " — see README.md#settings") from None
