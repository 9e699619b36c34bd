"""Fly's wire quirks, in and out: config normalisation, durations, signals, and config → ``MachineSpec``.

Inputs are accepted in every form Fly's docs or its Go client send (durations as strings or integer
nanoseconds, ``autostop`` as string or boolean, signals by name or number); outputs are what Fly
sends back (durations as strings, ``autostop`` off/stop as ``false``/``true``).
"""

from __future__ import annotations

import copy
import re
import signal as signals
from typing import Any

from velocity.domain import MachineSpec
from velocity.fly.image import parse_image

_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_AUTOSTOP_IN = {False: "off", True: "stop", "off": "off", "stop": "stop", "suspend": "suspend"}
_AUTOSTOP_OUT: dict[str, bool | str] = {"off": False, "stop": True, "suspend": "suspend"}
_RESTART_POLICIES = ("no", "always", "on-failure")
STOP_SIGNALS = ("SIGHUP", "SIGINT", "SIGQUIT", "SIGKILL", "SIGUSR1", "SIGUSR2", "SIGTERM")


class InvalidRequest(ValueError):
    """A request Fly would answer with 400; the message mimics Go's decoding errors where it can."""


def parse_duration(value: object, *, what: str) -> float:
    """Seconds from a Go duration string (``"1m30s"``) or integer nanoseconds."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidRequest(
            f"json: cannot unmarshal {_go_type(value)} into Go value of type fly.Duration ({what})"
        )
    if isinstance(value, int):
        return value / 1e9
    if value == "0":
        return 0.0
    if not _DURATION.match(value):
        raise InvalidRequest(f'time: invalid duration "{value}" ({what})')
    return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(value))


def go_duration(seconds: float) -> str:
    """Go's ``time.Duration.String`` for whole milliseconds and up: ``10s``, ``1m30s``, ``1.5s``."""
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{round(seconds * 1000):d}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{text}"
    return f"{int(minutes)}m{text}" if minutes else text


def parse_signal(value: object) -> str:
    """A signal's name from ``"SIGTERM"``, ``"TERM"``, ``15`` or ``"15"``."""
    try:
        if isinstance(value, int) and not isinstance(value, bool):
            name = signals.Signals(value).name
        elif isinstance(value, str) and value.isdigit():
            name = signals.Signals(int(value)).name
        elif isinstance(value, str):
            name = value.upper() if value.upper().startswith("SIG") else f"SIG{value.upper()}"
        else:
            raise InvalidRequest(f"json: cannot unmarshal {_go_type(value)} into Go value of type string")
    except ValueError as exc:
        raise InvalidRequest(f"invalid signal {value!r}") from exc
    if name not in STOP_SIGNALS:
        raise InvalidRequest(f"invalid signal {value!r}; use one of {', '.join(STOP_SIGNALS)}")
    return name


def normalize_config(raw: object) -> dict[str, Any]:
    """Check a ``MachineConfig`` and store it in one canonical form."""
    if not isinstance(raw, dict):
        raise InvalidRequest(
            f"json: cannot unmarshal {_go_type(raw)} into Go value of type fly.MachineConfig"
        )
    config = copy.deepcopy(raw)
    image = config.get("image")
    if not isinstance(image, str) or not image:
        raise InvalidRequest("invalid config: image is required")
    try:
        parse_image(image)
    except ValueError as exc:
        raise InvalidRequest(f"invalid image {image!r}: {exc}") from exc
    for name in ("env", "metadata"):
        mapping = config.setdefault(name, {})
        if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
            raise InvalidRequest(f"json: cannot unmarshal {name} values into Go value of type string")
    guest = config.setdefault("guest", {})
    guest.setdefault("cpu_kind", "shared")
    guest.setdefault("cpus", 1)
    guest.setdefault("memory_mb", 256)
    restart = config.get("restart") or {}
    if restart.get("policy", "on-failure") not in _RESTART_POLICIES:
        raise InvalidRequest(
            f"invalid restart policy {restart.get('policy')!r}; use no, always or on-failure"
        )
    if stop := config.get("stop_config"):
        if "signal" in stop:
            stop["signal"] = parse_signal(stop["signal"])
        if "timeout" in stop:
            stop["timeout"] = go_duration(parse_duration(stop["timeout"], what="stop_config.timeout"))
    for service in config.get("services") or []:
        if "autostop" in service:
            if service["autostop"] not in _AUTOSTOP_IN:
                raise InvalidRequest(f"invalid autostop {service['autostop']!r}; use off, stop or suspend")
            service["autostop"] = _AUTOSTOP_IN[service["autostop"]]
        for check in service.get("checks") or []:
            _normalize_check(check)
    for check in (config.get("checks") or {}).values():
        _normalize_check(check)
    config.setdefault("init", {})
    return config


def render_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config as Fly answers it: ``autostop`` off/stop go back as ``false``/``true``."""
    rendered = copy.deepcopy(config)
    for service in rendered.get("services") or []:
        if "autostop" in service:
            service["autostop"] = _AUTOSTOP_OUT[service["autostop"]]
    return rendered


def spec_from_config(config: dict[str, Any], *, region: str) -> MachineSpec:
    """What a backing provider is asked for, from a normalised Fly config."""
    guest = config.get("guest", {})
    services = config.get("services") or []
    port = next((s["internal_port"] for s in services if isinstance(s.get("internal_port"), int)), 8080)
    return MachineSpec(
        image=config["image"],
        memory_mb=int(guest.get("memory_mb", 256)),
        cpus=int(guest.get("cpus", 1)),
        cpu_kind=str(guest.get("cpu_kind", "shared")),
        internal_port=port,
        env=dict(config.get("env", {})),
        metadata=dict(config.get("metadata", {})),
        region=region,
    )


def health_checks(config: dict[str, Any]) -> list[tuple[str, str]]:
    """``(name, path)`` of every HTTP check, named the way Fly names service checks."""
    found: list[tuple[str, str]] = []
    for index, service in enumerate(config.get("services") or []):
        for number, check in enumerate(service.get("checks") or []):
            if check.get("type") == "http":
                found.append((f"servicecheck-{index:02d}-http-{number}", check.get("path", "/")))
    for name, check in (config.get("checks") or {}).items():
        if check.get("type") == "http":
            found.append((name, check.get("path", "/")))
    return found


def image_ref(image: str) -> dict[str, Any]:
    ref = parse_image(image)
    return {"registry": ref.registry, "repository": ref.repository, "tag": ref.tag or "latest", "labels": {}}


def _normalize_check(check: dict[str, Any]) -> None:
    for key in ("interval", "timeout", "grace_period"):
        if key in check:
            check[key] = go_duration(parse_duration(check[key], what=f"check {key}"))


def _go_type(value: object) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "object" if isinstance(value, dict) else "null"
