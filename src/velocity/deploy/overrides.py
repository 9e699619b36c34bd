"""One source of truth for a preview machine: the template, overridden by the settings an operator set.

A setting given in the environment or ``.env`` (``CONTAINER_MEMORY_MB=1024``) wins over the template; a
setting left at its default does not, so ``preview-container/fly.toml`` decides. Code that sizes or
addresses preview machines reads the template returned by ``apply_settings``, never the raw settings.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType

from velocity.deploy.template import GuestTemplate, MachineTemplate
from velocity.settings import Settings

# Env variables of the agent that carry the internal port; they follow CONTAINER_INTERNAL_PORT.
PORT_ENV = ("PORT", "CONTAINER_INTERNAL_PORT")


class Winner(enum.StrEnum):
    SETTINGS = "settings"
    TEMPLATE = "template"


@dataclass(frozen=True, slots=True)
class Disagreement:
    """One value the template and the settings both give, differently; ``winner`` is the one used."""

    variable: str
    template_key: str
    template_value: str
    settings_value: str
    winner: Winner

    def __str__(self) -> str:
        origin = "set" if self.winner is Winner.SETTINGS else "default"
        return (
            f"{self.variable}={self.settings_value} ({origin}) vs {self.template_key} = {self.template_value}"
            f" in the template: the {self.winner} value is used"
        )


@dataclass(frozen=True, slots=True)
class _Link:
    field: str
    variable: str
    template_key: str
    read: Callable[[MachineTemplate], object]
    setting: Callable[[Settings], object]


def _first_region(settings: Settings) -> str | None:
    return settings.fly_regions[0] if settings.fly_regions else None


_LINKS = (
    _Link("fly_app_name", "FLY_APP_NAME", "app", lambda t: t.app, lambda s: s.fly_app_name),
    _Link("fly_regions", "FLY_REGIONS", "primary_region", lambda t: t.primary_region, _first_region),
    _Link(
        "preview_container_image",
        "PREVIEW_CONTAINER_IMAGE",
        "build.image",
        lambda t: t.image,
        lambda s: s.preview_container_image,
    ),
    _Link(
        "container_memory_mb",
        "CONTAINER_MEMORY_MB",
        "vm.memory",
        lambda t: t.guest.memory_mb,
        lambda s: s.container_memory_mb,
    ),
    _Link(
        "container_cpu_count",
        "CONTAINER_CPU_COUNT",
        "vm.cpus",
        lambda t: t.guest.cpus,
        lambda s: s.container_cpu_count,
    ),
    _Link(
        "container_cpu_kind",
        "CONTAINER_CPU_KIND",
        "vm.cpu_kind",
        lambda t: t.guest.cpu_kind,
        lambda s: s.container_cpu_kind,
    ),
    _Link(
        "container_internal_port",
        "CONTAINER_INTERNAL_PORT",
        "services.internal_port",
        lambda t: t.internal_port,
        lambda s: s.container_internal_port,
    ),
)


def disagreements(template: MachineTemplate, settings: Settings) -> list[Disagreement]:
    """Every linked value that both sides give and that differs, saying which side wins."""
    found = []
    for link in _LINKS:
        ours, theirs = link.read(template), link.setting(settings)
        if ours is None or theirs is None or ours == theirs:
            continue
        winner = Winner.SETTINGS if link.field in settings.model_fields_set else Winner.TEMPLATE
        found.append(Disagreement(link.variable, link.template_key, str(ours), str(theirs), winner))
    return found


def apply_settings(template: MachineTemplate, settings: Settings) -> MachineTemplate:
    """The template with each value the operator set, and each value the template leaves open, filled in."""

    def chosen(link: _Link) -> object:
        ours = link.read(template)
        return link.setting(settings) if ours is None or link.field in settings.model_fields_set else ours

    values = {link.field: chosen(link) for link in _LINKS}
    port = _int(values["container_internal_port"])
    old_port = template.internal_port
    env = dict(template.env)
    if old_port is not None and port != old_port:
        env.update({name: str(port) for name in PORT_ENV if name in env})
    services = tuple(
        dataclasses.replace(s, internal_port=port) if s.internal_port == old_port else s
        for s in template.services
    )
    return dataclasses.replace(
        template,
        app=str(values["fly_app_name"]),
        primary_region=_text(values["fly_regions"]),
        image=str(values["preview_container_image"]),
        guest=GuestTemplate(
            memory_mb=_int(values["container_memory_mb"]),
            cpus=_int(values["container_cpu_count"]),
            cpu_kind=str(values["container_cpu_kind"]),
        ),
        env=MappingProxyType(env),
        services=services,
    )


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _int(value: object) -> int:
    assert isinstance(value, int)
    return value
