"""A preview's ``MachineSpec`` over the deployment kit's template becomes the Machines API config."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tests.fly.support import make_settings
from velocity.deploy import PREVIEW_TEMPLATE_PATH, AutoStop, load_machine_template
from velocity.domain import ConfigError, MachineSpec
from velocity.fly.machine_config import MachinePlan, create_request, default_template, machine_config
from velocity.providers.base import META_OWNER, OWNER_VALUE

SPEC = MachineSpec(
    image="ghcr.io/velocity/preview-container:1.2.3",
    memory_mb=1024,
    cpus=2,
    cpu_kind="shared",
    internal_port=8080,
    env={"AGENT_TOKEN": "agent-secret-for-this-preview", "SUPABASE_URL": "https://x.supabase.co"},
    metadata={"velocity_preview_id": "pv1", "project_id": "proj-1", "user_id": "u1"},
    region="ord",
)


@pytest.fixture
def plan() -> MachinePlan:
    settings = make_settings(fly_api_token="fly-secret-token", fly_regions=["ord", "iad"])
    return MachinePlan.from_settings(settings, default_template(settings))


def test_the_spec_decides_image_size_env_and_metadata(plan: MachinePlan) -> None:
    """Image and guest from the spec; PROJECT_ID from the metadata; our ownership mark added."""
    config = machine_config(SPEC, plan)
    assert config["image"] == SPEC.image
    assert config["guest"] == {"cpu_kind": "shared", "cpus": 2, "memory_mb": 1024}
    assert config["env"]["AGENT_TOKEN"] == "agent-secret-for-this-preview"
    assert config["env"]["PROJECT_ID"] == "proj-1"
    assert config["metadata"] == {**SPEC.metadata, META_OWNER: OWNER_VALUE}


def test_machines_destroy_themselves_and_serve_the_agent_behind_fly_proxy(plan: MachinePlan) -> None:
    """auto_destroy on; HTTP on 80 and TLS on 443 to the agent's port, with a /health check; no autostop."""
    config = machine_config(SPEC, plan)
    assert config["auto_destroy"] is True
    [service] = config["services"]
    assert service["internal_port"] == 8080
    assert [p["port"] for p in service["ports"]] == [80, 443]
    assert service["autostart"] is True
    assert service["autostop"] == "off"
    [check] = service["checks"]
    assert (check["type"], check["path"], check["port"]) == ("http", "/health", 8080)
    assert config["restart"] == {"policy": "no"}
    assert config["stop_config"] == {"signal": "SIGTERM", "timeout": "10s"}


def test_the_agent_service_follows_the_spec_port(plan: MachinePlan) -> None:
    """A spec on another port moves the service and its check there."""
    moved = replace(SPEC, internal_port=9000)
    [service] = machine_config(moved, plan)["services"]
    assert service["internal_port"] == 9000
    assert service["checks"][0]["port"] == 9000


@pytest.mark.parametrize(
    "env",
    [
        {"FLY_API_TOKEN": "anything"},
        {"DATABASE_URL": "postgres://x"},
        {"INNOCENT": "prefix-fly-secret-token-suffix"},
    ],
)
def test_secrets_are_refused_not_silently_dropped(plan: MachinePlan, env: dict[str, str]) -> None:
    """The Fly token never reaches a machine, by name or by value."""
    leaky = replace(SPEC, env=env)
    with pytest.raises(ConfigError, match="refusing to put secrets"):
        machine_config(leaky, plan)


def test_the_request_names_the_region(plan: MachinePlan) -> None:
    """One create request per region tried."""
    assert create_request(SPEC, plan, region="iad")["region"] == "iad"


def test_no_regions_is_a_config_error() -> None:
    """FLY_REGIONS must name one region at least."""
    with pytest.raises(ConfigError, match="FLY_REGIONS"):
        MachinePlan.from_settings(make_settings(fly_regions=[]))


@pytest.mark.skipif(
    not Path(PREVIEW_TEMPLATE_PATH).is_file(), reason="the deployment kit's template is not here"
)
def test_the_deployment_kit_template_yields_a_config_fly_accepts() -> None:
    """``preview-container/fly.toml`` with the settings applied: its services, checks and policies."""
    template = load_machine_template(Path(PREVIEW_TEMPLATE_PATH))
    plan = MachinePlan.from_settings(make_settings(), template)
    config = machine_config(SPEC, plan)
    assert config["services"][0]["autostop"] == AutoStop.OFF.value
    assert any(check.get("path") == "/health" for check in config["services"][0]["checks"])
    assert config["env"]["PORT"] == "8080"
