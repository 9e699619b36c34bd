"""Every fly.toml against the JSON schema of fly.toml, then read by ``velocity.deploy``.

``fly-toml.schema.json`` beside this file is a copy of SchemaStore's schema (``shared/reference``),
kept in the repository so that the suite runs wherever the repository is cloned.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from jsonschema import Draft7Validator  # type: ignore[import-untyped]

from tests.deploy.deploy_files import ORCHESTRATOR_APP, PREVIEW_TEMPLATE, ROOT, fly_toml, project_files
from velocity.deploy import FORBIDDEN_ENV, AutoStop, load_machine_template
from velocity.settings import ProviderKind, load_settings

FLY_TOMLS = project_files("fly.toml")
SCHEMA = json.loads((Path(__file__).parent / "fly-toml.schema.json").read_text(encoding="utf-8"))


def test_both_apps_have_a_fly_toml() -> None:
    """The orchestrator's app and the preview machines' template are where the guide says."""
    assert {p.relative_to(ROOT).as_posix() for p in FLY_TOMLS} >= {"fly.toml", "preview-container/fly.toml"}


@pytest.mark.parametrize("path", FLY_TOMLS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_the_fly_toml_is_valid_against_the_schema(path: Path) -> None:
    """No key of a wrong type or an unknown enum value, by the schema's reading."""
    errors = sorted(Draft7Validator(SCHEMA).iter_errors(fly_toml(path)), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors)


@pytest.mark.parametrize("path", FLY_TOMLS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_the_fly_toml_is_read_by_the_orchestrator(path: Path) -> None:
    """``load_machine_template`` accepts it and finds one service with an HTTP check."""
    template = load_machine_template(path)
    assert len(template.services) == 1
    assert template.health_path is not None
    assert FORBIDDEN_ENV.isdisjoint(template.env)


def test_the_preview_template_limits_requests_not_connections_and_leaves_room_for_a_vite_page() -> None:
    """Over HTTP/2 one tab is one connection; a cold Vite page asks for hundreds of modules at once."""
    (service,) = fly_toml(PREVIEW_TEMPLATE)["services"]
    concurrency = service["concurrency"]
    assert concurrency["type"] == "requests"
    assert 200 <= concurrency["soft_limit"] <= concurrency["hard_limit"]


def test_the_preview_template_starts_the_image_s_own_command() -> None:
    """No ``[experimental]`` cmd, entrypoint or exec: the seed's pair would run its command twice."""
    assert "experimental" not in fly_toml(PREVIEW_TEMPLATE)


def test_the_preview_template_leaves_stopping_machines_to_the_orchestrator() -> None:
    """``auto_stop_machines`` is the string ``off``, and the proxy may still start a machine."""
    template = load_machine_template(PREVIEW_TEMPLATE)
    assert template.auto_stop is AutoStop.OFF
    assert all(service.auto_start for service in template.services)


def test_the_preview_template_check_belongs_to_its_service() -> None:
    """The health check is a check of the service on the agent's port, not a top-level one."""
    document = fly_toml(PREVIEW_TEMPLATE)
    assert "checks" not in document
    assert "http_checks" not in document
    (service,) = load_machine_template(PREVIEW_TEMPLATE).services
    assert [(c.type, c.method, c.path) for c in service.checks] == [("http", "GET", "/health")]


def test_the_preview_template_restarts_a_crashed_agent_at_most_twice() -> None:
    """Then the machine stops and the preview fails with its logs, as the Fly provider configures it."""
    template = load_machine_template(PREVIEW_TEMPLATE)
    assert template.restart is not None
    assert (template.restart.policy, template.restart.max_retries) == ("on-failure", 2)
    assert (template.stop_signal, template.stop_timeout) == ("SIGTERM", "10s")


def test_the_preview_template_runs_dev_servers_with_their_dev_dependencies() -> None:
    """``NODE_ENV=production`` would make npm skip devDependencies, where Vite is."""
    assert load_machine_template(PREVIEW_TEMPLATE).env["NODE_ENV"] == "development"


def test_the_schema_rejects_the_seed_s_boolean_auto_stop() -> None:
    """The validation really checks: ``auto_stop_machines = true`` is no longer a valid value."""
    errors = list(Draft7Validator(SCHEMA).iter_errors({"services": [{"auto_stop_machines": True}]}))
    assert errors


# What Fly sets in every machine's environment (fly.io/docs/machines/runtime-environment), beside the
# app's [env] and its secrets.
FLY_RUNTIME_ENV = {
    "FLY_APP_NAME": "velocity-orchestrator",
    "FLY_MACHINE_ID": "148ed193b95089",
    "FLY_ALLOC_ID": "148ed193b95089",
    "FLY_REGION": "ord",
    "PRIMARY_REGION": "ord",
    "FLY_PUBLIC_IP": "2a09:8280:1::a:b",
    "FLY_PRIVATE_IP": "fdaa:0:1a2b:a7b:1f6:148e:d193:2",
    "FLY_IMAGE_REF": "registry.fly.io/velocity-orchestrator:deployment-01J",
    "FLY_MACHINE_VERSION": "01JABCDEF",
    "FLY_PROCESS_GROUP": "app",
    "FLY_VM_MEMORY_MB": "512",
}
FLY_SECRETS = {
    "FLY_API_TOKEN": "FlyV1 fm2_secret",
    "DATABASE_URL": "postgresql://velocity:pw@velocity-db.flycast:5432/velocity",
    "SUPABASE_URL": "https://abc.supabase.co",
    "SUPABASE_ANON_KEY": "anon",
    "SUPABASE_JWT_SECRET": "x" * 40,
}


def test_the_orchestrator_s_settings_load_as_fly_starts_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The root fly.toml's [env], Fly's runtime variables and the documented secrets make valid settings,
    with preview machines going to the preview app, not to the orchestrator's own."""
    for name in list(os.environ):
        if name.startswith(("FLY_", "VELOCITY_", "PREVIEW_", "CONTAINER_", "SUPABASE_", "DATABASE_")):
            monkeypatch.delenv(name)
    env = {k: str(v) for k, v in fly_toml(ORCHESTRATOR_APP)["env"].items()}
    for name, value in {**env, **FLY_RUNTIME_ENV, **FLY_SECRETS}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)  # no .env file of this checkout
    settings = load_settings()
    assert settings.preview_provider is ProviderKind.FLY
    assert settings.fly_app_name == "velocity-preview-containers"
    assert settings.fly_machine_id == FLY_RUNTIME_ENV["FLY_MACHINE_ID"]
