"""A preview machine's Fly config: the preview's ``MachineSpec`` laid over the deployment kit's template.

The template (``preview-container/fly.toml`` read by ``velocity.deploy``, settings applied) decides the
services, ports, ``/health`` check, autostop and restart policy; the spec decides image, size, port,
environment and metadata. ``auto_destroy`` is always on, so a machine whose agent exits stops costing
money even if the orchestrator is down, and secrets are refused however they got into the spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from velocity.deploy import (
    FORBIDDEN_ENV,
    PREVIEW_TEMPLATE_PATH,
    CheckTemplate,
    MachineTemplate,
    PortTemplate,
    RestartTemplate,
    ServiceTemplate,
    apply_settings,
    load_machine_template,
)
from velocity.domain import ConfigError, MachineSpec
from velocity.fly.types import CreateMachineRequest, MachineConfig, RestartPolicy, ServiceCheck, ServiceConfig
from velocity.providers.base import META_OWNER, META_PROJECT_ID, OWNER_VALUE
from velocity.settings import Settings


@dataclass(frozen=True, slots=True)
class MachinePlan:
    """What every preview machine shares: the template, the regions to try, what must never leak."""

    template: MachineTemplate
    regions: tuple[str, ...]
    auto_destroy: bool = True
    stop_signal: str = "SIGTERM"
    stop_timeout_seconds: int = 10
    # Secret values (the Fly token, the database URL...) that must not appear in a machine's env.
    secrets: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: Settings, template: MachineTemplate | None = None) -> MachinePlan:
        if not settings.fly_regions:
            raise ConfigError("FLY_REGIONS is empty; name at least one region, e.g. FLY_REGIONS=ord,iad")
        if template is None:
            path = Path(PREVIEW_TEMPLATE_PATH)
            template = load_machine_template(path) if path.is_file() else default_template(settings)
        secrets = {
            secret.get_secret_value()
            for secret in (settings.fly_api_token, settings.supabase_jwt_secret)
            if secret is not None and secret.get_secret_value()
        }
        if settings.database_url:
            secrets.add(settings.database_url)
        return cls(
            template=apply_settings(template, settings),
            regions=tuple(settings.fly_regions),
            secrets=frozenset(secrets),
        )


def default_template(settings: Settings) -> MachineTemplate:
    """The seed guide's template, for when ``preview-container/fly.toml`` is not beside the orchestrator."""
    health = CheckTemplate(
        type="http",
        interval="15s",
        timeout="2s",
        grace_period="5s",
        method="GET",
        path="/health",
        protocol="http",
    )
    service = ServiceTemplate(
        internal_port=settings.container_internal_port,
        ports=(PortTemplate(80, ("http",), force_https=True), PortTemplate(443, ("tls", "http"))),
        checks=(health,),
    )
    return MachineTemplate(
        app=settings.fly_app_name,
        image=settings.preview_container_image,
        services=(service,),
        restart=RestartTemplate(policy="no"),
        source="built-in default",
    )


def machine_env(spec: MachineSpec, plan: MachinePlan) -> dict[str, str]:
    """The template's env with the spec's on top; secrets refused loudly, never dropped silently."""
    env = {**plan.template.env, **spec.env}
    if "PORT" in plan.template.env:
        env["PORT"] = str(spec.internal_port)
    if project_id := spec.metadata.get(META_PROJECT_ID):
        env.setdefault("PROJECT_ID", project_id)
    leaked = sorted(
        name
        for name, value in env.items()
        if name.upper() in FORBIDDEN_ENV or any(secret in value for secret in plan.secrets)
    )
    if leaked:
        raise ConfigError(
            f"refusing to put secrets into a preview machine's environment: {', '.join(leaked)}"
        )
    return env


def service_config(service: ServiceTemplate, port: int) -> ServiceConfig:
    """One service of a machine config, from its fly.toml form."""
    config: ServiceConfig = {
        "protocol": "udp" if service.protocol == "udp" else "tcp",
        "internal_port": port,
        "ports": [
            {"port": p.port, "handlers": list(p.handlers), **({"force_https": True} if p.force_https else {})}
            for p in service.ports
        ],
        # The proxy starts a stopped or suspended machine when the router replays a request to it.
        "autostart": service.auto_start,
        "autostop": service.auto_stop.value,
        "min_machines_running": service.min_machines_running,
        "checks": [_check(check, port) for check in service.checks],
    }
    if (c := service.concurrency) is not None:
        config["concurrency"] = {"type": "requests" if c.type == "requests" else "connections"}
        if c.soft_limit is not None:
            config["concurrency"]["soft_limit"] = c.soft_limit
        if c.hard_limit is not None:
            config["concurrency"]["hard_limit"] = c.hard_limit
    return config


def _check(check: CheckTemplate, port: int) -> ServiceCheck:
    config: ServiceCheck = {"type": "http" if check.type == "http" else "tcp", "port": port}
    if check.interval is not None:
        config["interval"] = check.interval
    if check.timeout is not None:
        config["timeout"] = check.timeout
    if check.grace_period is not None:
        config["grace_period"] = check.grace_period
    if check.method is not None:
        config["method"] = check.method
    if check.path is not None:
        config["path"] = check.path
    if check.protocol in ("http", "https"):
        config["protocol"] = "https" if check.protocol == "https" else "http"
    return config


def machine_config(spec: MachineSpec, plan: MachinePlan) -> MachineConfig:
    template = plan.template
    config: MachineConfig = {
        "image": spec.image,
        "env": machine_env(spec, plan),
        "guest": {"cpu_kind": spec.cpu_kind, "cpus": spec.cpus, "memory_mb": spec.memory_mb},
        "auto_destroy": plan.auto_destroy,
        "stop_config": {"signal": plan.stop_signal, "timeout": f"{plan.stop_timeout_seconds}s"},
        # The agent's service follows the spec's port; other services keep theirs.
        "services": [
            service_config(
                s, spec.internal_port if s.internal_port == template.internal_port else s.internal_port
            )
            for s in template.services
        ],
        "metadata": {**spec.metadata, META_OWNER: OWNER_VALUE},
    }
    if (restart := template.restart) is not None:
        policy: RestartPolicy = (
            "no" if restart.policy == "no" else "always" if restart.policy == "always" else "on-failure"
        )
        config["restart"] = {"policy": policy}
        if restart.max_retries is not None:
            config["restart"]["max_retries"] = restart.max_retries
    return config


def create_request(spec: MachineSpec, plan: MachinePlan, *, region: str) -> CreateMachineRequest:
    return {"config": machine_config(spec, plan), "region": region}
