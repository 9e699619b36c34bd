"""A ``fly.toml`` machine template read into frozen dataclasses.

Only the fields that shape a preview machine are kept: image, guest size, env, services with their
ports, handlers and checks, autostop, the restart policy and how the machine is stopped. Values are
normalised to the Machines API's words (``restart.policy`` ``never`` becomes ``no``;
``auto_stop_machines = true`` becomes ``stop``; memory ``"1gb"`` becomes 1024 MiB; a bare integer check
time becomes milliseconds and a bare ``kill_timeout`` seconds, as in flyctl).
"""

from __future__ import annotations

import enum
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from velocity.domain import ConfigError

# Names that must never reach a machine's environment, where user code can read them.
FORBIDDEN_ENV = frozenset({"FLY_API_TOKEN", "DATABASE_URL", "SUPABASE_JWT_SECRET"})

# Fly's presets for ``[[vm]] size``: (cpu_kind, cpus, memory_mb).
_SIZES = {
    f"{kind}-{cpus}x": (kind.removesuffix("-cpu"), cpus, memory)
    for kind, base in (("shared-cpu", 256), ("performance", 2048))
    for cpus, memory in ((n, base * n) for n in (1, 2, 4, 8, 16))
}
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_MEMORY_FACTOR = {"k": 1 / 1024, "": 1, "m": 1, "g": 1024, "t": 1024 * 1024}
_RESTART = {
    "never": "no",
    "no": "no",
    "always": "always",
    "on-failure": "on-failure",
    "on-fail": "on-failure",
}


class AutoStop(enum.StrEnum):
    OFF = "off"
    STOP = "stop"
    SUSPEND = "suspend"


@dataclass(frozen=True, slots=True)
class GuestTemplate:
    """``[[vm]]``; ``None`` leaves the value to Fly's default (shared-cpu-1x, 256 MiB)."""

    memory_mb: int | None = None
    cpus: int | None = None
    cpu_kind: str | None = None


@dataclass(frozen=True, slots=True)
class PortTemplate:
    port: int
    handlers: tuple[str, ...] = ()
    force_https: bool = False


@dataclass(frozen=True, slots=True)
class CheckTemplate:
    """A service check; durations are strings with units (``"15s"``), as the Machines API returns them."""

    type: str
    interval: str | None = None
    timeout: str | None = None
    grace_period: str | None = None
    method: str | None = None
    path: str | None = None
    protocol: str | None = None


@dataclass(frozen=True, slots=True)
class ConcurrencyTemplate:
    type: str = "connections"
    soft_limit: int | None = None
    hard_limit: int | None = None


@dataclass(frozen=True, slots=True)
class ServiceTemplate:
    internal_port: int
    protocol: str = "tcp"
    ports: tuple[PortTemplate, ...] = ()
    checks: tuple[CheckTemplate, ...] = ()
    auto_stop: AutoStop = AutoStop.OFF
    auto_start: bool = True
    min_machines_running: int = 0
    concurrency: ConcurrencyTemplate | None = None


@dataclass(frozen=True, slots=True)
class RestartTemplate:
    """``policy`` in the API's spelling: ``no``, ``always`` or ``on-failure``."""

    policy: str
    max_retries: int | None = None


@dataclass(frozen=True, slots=True)
class MachineTemplate:
    """What every preview machine is made from. ``image`` is ``None`` when ``fly deploy`` builds it."""

    app: str
    image: str | None
    guest: GuestTemplate = field(default_factory=GuestTemplate)
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    services: tuple[ServiceTemplate, ...] = ()
    restart: RestartTemplate | None = None
    primary_region: str | None = None
    stop_signal: str | None = None
    stop_timeout: str | None = None
    source: str = "fly.toml"

    @property
    def internal_port(self) -> int | None:
        """The port of the first service: the agent's port in a preview machine."""
        return self.services[0].internal_port if self.services else None

    @property
    def health_path(self) -> str | None:
        """The path of the first HTTP check of any service."""
        paths = [c.path for s in self.services for c in s.checks if c.type == "http" and c.path]
        return paths[0] if paths else None

    @property
    def auto_stop(self) -> AutoStop:
        return self.services[0].auto_stop if self.services else AutoStop.OFF


def load_machine_template(path: Path) -> MachineTemplate:
    """Read and check one ``fly.toml``; every problem is a ``ConfigError`` naming the file and key."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the machine template ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return parse_machine_template(document, source=str(path))


def parse_machine_template(document: Mapping[str, Any], *, source: str = "fly.toml") -> MachineTemplate:
    """Turn a parsed ``fly.toml`` into a ``MachineTemplate``."""
    reader = _Reader(source)
    app = reader.text(document, "app")
    if app is None:
        raise ConfigError(f"{source}: `app` is missing; name the Fly app the machines belong to")
    build = reader.table(document, "build")
    services = [
        reader.service(s, f"services[{i}]") for i, s in enumerate(reader.tables(document, "services"))
    ]
    if "http_service" in document:
        services.append(reader.http_service(reader.table(document, "http_service")))
    return MachineTemplate(
        app=app,
        image=reader.text(build, "image", "build."),
        guest=reader.guest(reader.tables(document, "vm")),
        env=MappingProxyType(reader.env(reader.table(document, "env"))),
        services=tuple(services),
        restart=reader.restart(reader.tables(document, "restart")),
        primary_region=reader.text(document, "primary_region"),
        stop_signal=reader.text(document, "kill_signal"),
        stop_timeout=reader.duration(document, "kill_timeout", "", unit="s"),
        source=source,
    )


class _Reader:
    """Typed access to a TOML document; errors name the file and the dotted key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.source}: `{key}` {problem}")

    def text(self, table: Mapping[str, Any], key: str, prefix: str = "") -> str | None:
        value = table.get(key)
        if value is not None and not isinstance(value, str):
            raise self.fail(prefix + key, f"must be a string, not {value!r}")
        return value

    def integer(self, table: Mapping[str, Any], key: str, prefix: str = "") -> int | None:
        value = table.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise self.fail(prefix + key, f"must be an integer, not {value!r}")
        return value

    def flag(self, table: Mapping[str, Any], key: str, default: bool, prefix: str = "") -> bool:
        value = table.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(prefix + key, f"must be true or false, not {value!r}")
        return value

    def table(self, document: Mapping[str, Any], key: str) -> Mapping[str, Any]:
        value = document.get(key, {})
        if not isinstance(value, Mapping):
            raise self.fail(key, "must be a table")
        return value

    def tables(self, document: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
        value = document.get(key, [])
        items = [value] if isinstance(value, Mapping) else value
        if not isinstance(items, list) or not all(isinstance(item, Mapping) for item in items):
            raise self.fail(key, "must be a table or an array of tables")
        return items

    def env(self, table: Mapping[str, Any]) -> dict[str, str]:
        for name, value in table.items():
            if not isinstance(value, str):
                raise self.fail(f"env.{name}", f"must be a string (Fly passes env as strings), not {value!r}")
            if name.upper().startswith("FLY_"):
                raise self.fail(
                    f"env.{name}", "uses the FLY_ prefix, which Fly reserves for its own variables"
                )
            if name.upper() in FORBIDDEN_ENV:
                raise self.fail(f"env.{name}", "is a secret; it must never enter a machine's environment")
        return dict(table)

    def guest(self, vms: list[Mapping[str, Any]]) -> GuestTemplate:
        own = [vm for vm in vms if not vm.get("processes")]
        if len(own) > 1:
            raise self.fail("vm", "has several entries; a machine template has one size")
        if not own:
            return GuestTemplate()
        vm = own[0]
        kind, cpus, memory = None, None, None
        size = self.text(vm, "size", "vm.")
        if size is not None:
            if size not in _SIZES:
                raise self.fail("vm.size", f"is not a Fly preset: {size!r}")
            kind, cpus, memory = _SIZES[size]
        return GuestTemplate(
            memory_mb=self.memory(vm.get("memory", vm.get("memory_mb"))) or memory,
            cpus=self.integer(vm, "cpus", "vm.") or cpus,
            cpu_kind=self.text(vm, "cpu_kind", "vm.") or kind,
        )

    def memory(self, value: object) -> int | None:
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        match = _MEMORY.match(value) if isinstance(value, str) else None
        if match is None:
            raise self.fail("vm.memory", f"must be MiB or a size such as '512mb' or '1gb', not {value!r}")
        return int(float(match[1]) * _MEMORY_FACTOR[match[2].lower()])

    def duration(self, table: Mapping[str, Any], key: str, prefix: str, unit: str = "ms") -> str | None:
        """A duration string; a bare number is in ``unit`` (ms for check times, s for kill_timeout)."""
        value = table.get(key)
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value}{unit}"
        raise self.fail(prefix + key, f"must be a duration such as '15s', not {value!r}")

    def check(self, table: Mapping[str, Any], kind: str, key: str) -> CheckTemplate:
        prefix = key + "."
        return CheckTemplate(
            type=kind,
            interval=self.duration(table, "interval", prefix),
            timeout=self.duration(table, "timeout", prefix),
            grace_period=self.duration(table, "grace_period", prefix),
            method=self.text(table, "method", prefix),
            path=self.text(table, "path", prefix),
            protocol=self.text(table, "protocol", prefix),
        )

    def auto_stop(self, table: Mapping[str, Any], key: str) -> AutoStop:
        value = table.get("auto_stop_machines", "off")
        if isinstance(value, bool):
            return AutoStop.STOP if value else AutoStop.OFF
        try:
            return AutoStop(value)
        except ValueError:
            raise self.fail(
                f"{key}.auto_stop_machines", f'must be "off", "stop" or "suspend", not {value!r}'
            ) from None

    def concurrency(self, table: Mapping[str, Any], key: str) -> ConcurrencyTemplate | None:
        if "concurrency" not in table:
            return None
        value = self.table(table, "concurrency")
        prefix = f"{key}.concurrency."
        return ConcurrencyTemplate(
            type=self.text(value, "type", prefix) or "connections",
            soft_limit=self.integer(value, "soft_limit", prefix),
            hard_limit=self.integer(value, "hard_limit", prefix),
        )

    def service(self, table: Mapping[str, Any], key: str) -> ServiceTemplate:
        port = self.integer(table, "internal_port", key + ".")
        ports = []
        for i, entry in enumerate(self.tables(table, "ports")):
            number = self.integer(entry, "port", f"{key}.ports[{i}].")
            if number is None:
                raise self.fail(f"{key}.ports[{i}].port", "is missing")
            handlers = entry.get("handlers", [])
            if not isinstance(handlers, list) or not all(isinstance(h, str) for h in handlers):
                raise self.fail(f"{key}.ports[{i}].handlers", "must be a list of strings")
            force = self.flag(entry, "force_https", False, f"{key}.ports[{i}].")
            ports.append(PortTemplate(port=number, handlers=tuple(handlers), force_https=force))
        checks = [self.check(c, "http", f"{key}.http_checks") for c in self.tables(table, "http_checks")]
        checks += [self.check(c, "tcp", f"{key}.tcp_checks") for c in self.tables(table, "tcp_checks")]
        return ServiceTemplate(
            internal_port=8080 if port is None else port,
            protocol=self.text(table, "protocol", key + ".") or "tcp",
            ports=tuple(ports),
            checks=tuple(checks),
            auto_stop=self.auto_stop(table, key),
            auto_start=self.flag(table, "auto_start_machines", True, key + "."),
            min_machines_running=self.integer(table, "min_machines_running", key + ".") or 0,
            concurrency=self.concurrency(table, key),
        )

    def http_service(self, table: Mapping[str, Any]) -> ServiceTemplate:
        """``[http_service]`` is shorthand for a TCP service on 80 (HTTP) and 443 (TLS + HTTP)."""
        key = "http_service"
        port = self.integer(table, "internal_port", key + ".")
        force = self.flag(table, "force_https", False, key + ".")
        checks = [self.check(c, "http", f"{key}.checks") for c in self.tables(table, "checks")]
        return ServiceTemplate(
            internal_port=8080 if port is None else port,
            ports=(PortTemplate(80, ("http",), force), PortTemplate(443, ("http", "tls"))),
            checks=tuple(checks),
            auto_stop=self.auto_stop(table, key),
            auto_start=self.flag(table, "auto_start_machines", True, key + "."),
            min_machines_running=self.integer(table, "min_machines_running", key + ".") or 0,
            concurrency=self.concurrency(table, key),
        )

    def restart(self, entries: list[Mapping[str, Any]]) -> RestartTemplate | None:
        own = [entry for entry in entries if not entry.get("processes")]
        if not own:
            return None
        policy = self.text(own[0], "policy", "restart.")
        if policy not in _RESTART:
            raise self.fail("restart.policy", f'must be "never", "on-failure" or "always", not {policy!r}')
        return RestartTemplate(
            policy=_RESTART[policy], max_retries=self.integer(own[0], "retries", "restart.")
        )
