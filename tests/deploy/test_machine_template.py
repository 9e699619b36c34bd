"""``velocity.deploy.template``: a fly.toml read into a MachineTemplate, in the Machines API's words."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

from velocity.deploy import (
    AutoStop,
    CheckTemplate,
    GuestTemplate,
    PortTemplate,
    load_machine_template,
    parse_machine_template,
)
from velocity.domain import ConfigError

MINIMAL = 'app = "previews"\n[build]\nimage = "example/image:1"\n'


@pytest.mark.parametrize(
    ("memory", "expected"),
    [('"512mb"', 512), ('"1gb"', 1024), ('"2GB"', 2048), ('"256MiB"', 256), ("768", 768), ('"1024"', 1024)],
)
def test_memory_is_read_in_mib_from_each_spelling_flyctl_accepts(memory: str, expected: int) -> None:
    """Sizes with units and bare numbers (MiB) all become ``memory_mb``."""
    parsed = parse_machine_template(tomllib.loads(MINIMAL + f"[[vm]]\nmemory = {memory}\n"))
    assert parsed.guest.memory_mb == expected


def test_a_size_preset_gives_kind_cpus_and_memory_unless_set() -> None:
    """``size = "shared-cpu-2x"`` is 2 shared CPUs and 512 MiB; an explicit memory wins."""
    preset = parse_machine_template(tomllib.loads(MINIMAL + '[[vm]]\nsize = "shared-cpu-2x"\n'))
    assert preset.guest == GuestTemplate(memory_mb=512, cpus=2, cpu_kind="shared")
    sized = parse_machine_template(
        tomllib.loads(MINIMAL + '[[vm]]\nsize = "performance-1x"\nmemory = "4gb"\n')
    )
    assert sized.guest == GuestTemplate(memory_mb=4096, cpus=1, cpu_kind="performance")


def test_no_vm_section_leaves_the_size_to_fly() -> None:
    """Without ``[[vm]]`` every guest value is None, and the settings fill them."""
    assert parse_machine_template(tomllib.loads(MINIMAL)).guest == GuestTemplate()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"off"', AutoStop.OFF),
        ('"stop"', AutoStop.STOP),
        ('"suspend"', AutoStop.SUSPEND),
        ("true", AutoStop.STOP),
        ("false", AutoStop.OFF),
    ],
)
def test_auto_stop_takes_the_three_words_and_the_old_booleans(value: str, expected: AutoStop) -> None:
    """Booleans are the older spelling of ``stop`` and ``off``."""
    text = MINIMAL + f"[[services]]\ninternal_port = 8080\nauto_stop_machines = {value}\n"
    assert parse_machine_template(tomllib.loads(text)).auto_stop is expected


@pytest.mark.parametrize(
    ("policy", "expected"), [("never", "no"), ("on-failure", "on-failure"), ("always", "always")]
)
def test_the_restart_policy_is_spelled_as_the_api_spells_it(policy: str, expected: str) -> None:
    """fly.toml's ``never`` is the API's ``no``."""
    text = MINIMAL + f'[[restart]]\npolicy = "{policy}"\nretries = 3\n'
    restart = parse_machine_template(tomllib.loads(text)).restart
    assert restart is not None
    assert (restart.policy, restart.max_retries) == (expected, 3)


def test_a_service_keeps_its_ports_handlers_and_checks() -> None:
    """Ports with handlers and force_https, HTTP and TCP checks with durations as strings."""
    text = MINIMAL + (
        "[[services]]\ninternal_port = 9000\n"
        '[[services.ports]]\nport = 443\nhandlers = ["tls", "http"]\n'
        '[[services.ports]]\nport = 80\nhandlers = ["http"]\nforce_https = true\n'
        '[[services.http_checks]]\ninterval = "15s"\ntimeout = 2000\npath = "/health"\nmethod = "GET"\n'
        '[[services.tcp_checks]]\ninterval = "30s"\n'
    )
    (service,) = parse_machine_template(tomllib.loads(text)).services
    assert service.internal_port == 9000
    assert service.ports == (
        PortTemplate(443, ("tls", "http")),
        PortTemplate(80, ("http",), force_https=True),
    )
    assert service.checks == (
        CheckTemplate(type="http", interval="15s", timeout="2000ms", path="/health", method="GET"),
        CheckTemplate(type="tcp", interval="30s"),
    )


def test_http_service_is_a_service_on_80_and_443_with_its_checks() -> None:
    """``[http_service]`` reads as the service flyctl makes of it."""
    text = (
        MINIMAL
        + '[http_service]\ninternal_port = 8000\nforce_https = true\n[[http_service.checks]]\npath = "/h"\n'
    )
    parsed = parse_machine_template(tomllib.loads(text))
    assert parsed.internal_port == 8000
    assert parsed.health_path == "/h"
    assert parsed.services[0].ports == (PortTemplate(80, ("http",), True), PortTemplate(443, ("http", "tls")))


def test_the_template_cannot_be_changed_after_reading() -> None:
    """MachineTemplate is frozen and its env read-only."""
    parsed = parse_machine_template(tomllib.loads(MINIMAL + '[env]\nA = "1"\n'))
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.image = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        parsed.env["A"] = "2"  # type: ignore[index]


WRONG_VALUES = [
    ('[env]\nFLY_API_TOKEN = "x"\n', "env.FLY_API_TOKEN"),
    ('[env]\nDATABASE_URL = "postgres://"\n', "env.DATABASE_URL"),
    ('[env]\nFLY_REGION = "ord"\n', "env.FLY_REGION"),
    ("[env]\nPORT = 8080\n", "env.PORT"),
    ('[[vm]]\nmemory = "lots"\n', "vm.memory"),
    ('[[vm]]\nsize = "huge"\n', "vm.size"),
    ("[[vm]]\ncpus = 1\n[[vm]]\ncpus = 2\n", "vm"),
    ('[[services]]\nauto_stop_machines = "sometimes"\n', "services[0].auto_stop_machines"),
    ('[[services]]\ninternal_port = "8080"\n', "services[0].internal_port"),
    ("[[services]]\n[[services.ports]]\nhandlers = []\n", "services[0].ports[0].port"),
    ('[[restart]]\npolicy = "maybe"\n', "restart.policy"),
]


@pytest.mark.parametrize(("text", "names"), WRONG_VALUES, ids=[names for _, names in WRONG_VALUES])
def test_a_wrong_value_is_a_config_error_naming_the_file_and_the_key(text: str, names: str) -> None:
    """Each mistake says where it is, in words a person can act on."""
    with pytest.raises(ConfigError, match="^" + re.escape(f"test.toml: `{names}`")):
        parse_machine_template(tomllib.loads(MINIMAL + text), source="test.toml")


def test_a_template_without_an_app_is_refused() -> None:
    """The app is where machines are made; it cannot be guessed."""
    with pytest.raises(ConfigError, match="`app` is missing"):
        parse_machine_template({"build": {"image": "x"}}, source="test.toml")


def test_a_missing_or_broken_file_is_a_config_error(tmp_path: Path) -> None:
    """Neither an OSError nor a TOMLDecodeError escapes."""
    with pytest.raises(ConfigError, match="cannot read"):
        load_machine_template(tmp_path / "absent.toml")
    broken = tmp_path / "fly.toml"
    broken.write_text("app = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_machine_template(broken)


def test_kill_timeout_is_in_seconds_and_check_times_in_milliseconds() -> None:
    """A bare ``kill_timeout = 30`` is 30 s; a bare check ``timeout = 2000`` is 2000 ms."""
    parsed = parse_machine_template(tomllib.loads('kill_signal = "SIGINT"\nkill_timeout = 30\n' + MINIMAL))
    assert (parsed.stop_signal, parsed.stop_timeout) == ("SIGINT", "30s")


def test_the_orchestrator_s_own_app_has_no_image_of_its_own() -> None:
    """``fly deploy`` builds it from the Dockerfile, so ``image`` is None."""
    parsed = parse_machine_template({"app": "velocity-orchestrator", "build": {"dockerfile": "Dockerfile"}})
    assert parsed.image is None
