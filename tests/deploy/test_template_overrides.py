"""``velocity.deploy.overrides``: settings an operator set win over the template, and doctor sees where."""

from __future__ import annotations

import tomllib
from collections.abc import Callable

import pytest

from tests.deploy.deploy_files import PREVIEW_TEMPLATE
from velocity.deploy import (
    Disagreement,
    GuestTemplate,
    MachineTemplate,
    Winner,
    apply_settings,
    disagreements,
    load_machine_template,
    parse_machine_template,
)
from velocity.settings import Settings

MakeSettings = Callable[..., Settings]
SETTINGS_NAMES = {(f.description or "").split(":")[0] for f in Settings.model_fields.values()}


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> MakeSettings:
    """Settings from the given variables only: the machine's environment and any .env are left out."""
    for name in SETTINGS_NAMES:
        monkeypatch.delenv(name, raising=False)

    def make(**variables: str) -> Settings:
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        return Settings(_env_file=None)

    return make


def parse(text: str) -> MachineTemplate:
    return parse_machine_template(tomllib.loads('app = "velocity-preview-containers"\n' + text))


def test_settings_left_at_their_defaults_agree_with_the_preview_template(settings: MakeSettings) -> None:
    """A laptop with no .env and a Fly deployment start from the same machine."""
    template = load_machine_template(PREVIEW_TEMPLATE)
    assert disagreements(template, settings()) == []
    assert apply_settings(template, settings()) == template


def test_a_setting_the_operator_set_wins_and_is_reported(settings: MakeSettings) -> None:
    """CONTAINER_MEMORY_MB=1024 beats ``memory = "512mb"``, and doctor says so."""
    template = load_machine_template(PREVIEW_TEMPLATE)
    chosen = settings(CONTAINER_MEMORY_MB="1024", CONTAINER_CPU_KIND="performance")
    assert disagreements(template, chosen) == [
        Disagreement("CONTAINER_MEMORY_MB", "vm.memory", "512", "1024", Winner.SETTINGS),
        Disagreement("CONTAINER_CPU_KIND", "vm.cpu_kind", "shared", "performance", Winner.SETTINGS),
    ]
    assert apply_settings(template, chosen).guest == GuestTemplate(
        memory_mb=1024, cpus=1, cpu_kind="performance"
    )


def test_a_setting_left_at_its_default_does_not_override_the_template(settings: MakeSettings) -> None:
    """The template's 2 GiB stays; doctor still notes that the default differs."""
    template = parse('[build]\nimage = "x:1"\n[[vm]]\nmemory = "2gb"\ncpus = 2\ncpu_kind = "shared"\n')
    assert apply_settings(template, settings()).guest.memory_mb == 2048
    found = {d.variable: d.winner for d in disagreements(template, settings())}
    assert found == {
        "PREVIEW_CONTAINER_IMAGE": Winner.TEMPLATE,
        "CONTAINER_MEMORY_MB": Winner.TEMPLATE,
        "CONTAINER_CPU_COUNT": Winner.TEMPLATE,
    }


def test_values_the_template_leaves_open_come_from_the_settings(settings: MakeSettings) -> None:
    """No image and no [[vm]]: the settings' values fill them, with no disagreement."""
    template = parse("")
    applied = apply_settings(template, settings(PREVIEW_CONTAINER_IMAGE="ghcr.io/acme/preview:sha-1"))
    assert applied.image == "ghcr.io/acme/preview:sha-1"
    assert applied.guest == GuestTemplate(memory_mb=512, cpus=1, cpu_kind="shared")
    assert applied.primary_region == "ord"
    assert disagreements(template, settings()) == []


def test_a_new_internal_port_moves_the_service_and_the_agent_s_env(settings: MakeSettings) -> None:
    """CONTAINER_INTERNAL_PORT=9090 changes the service, PORT and CONTAINER_INTERNAL_PORT together."""
    template = load_machine_template(PREVIEW_TEMPLATE)
    applied = apply_settings(template, settings(CONTAINER_INTERNAL_PORT="9090"))
    assert applied.internal_port == 9090
    assert (applied.env["PORT"], applied.env["CONTAINER_INTERNAL_PORT"]) == ("9090", "9090")
    assert applied.services[0].checks == template.services[0].checks
    assert template.internal_port == 8080


def test_the_app_name_fly_sets_on_the_orchestrator_is_reported(settings: MakeSettings) -> None:
    """On Fly, FLY_APP_NAME is the orchestrator's own app: doctor must show it against the template."""
    template = load_machine_template(PREVIEW_TEMPLATE)
    (found,) = disagreements(template, settings(FLY_APP_NAME="velocity-orchestrator"))
    assert (found.variable, found.template_value, found.winner) == (
        "FLY_APP_NAME",
        "velocity-preview-containers",
        Winner.SETTINGS,
    )
    assert "FLY_APP_NAME=velocity-orchestrator (set)" in str(found)
    assert "velocity-preview-containers" in str(found)
