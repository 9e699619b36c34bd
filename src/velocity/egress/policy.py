"""Which destinations a preview may reach: pure decisions, the same in the orchestrator and in a machine.

A destination passes in two steps. By name, before anything is resolved: the host (and port) must be
on the allowlist, or be an internal service whose listed requests alone pass. By address, after the
proxy has resolved the name itself: no address may be internal (``addresses``) unless that address is
on the allowlist as a literal, so a name that rebinds to 127.0.0.1 or 169.254.169.254 gets nowhere. The
proxy then dials exactly the addresses it checked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from velocity.egress.addresses import IPAddress, internal_kind, parse_address

DEFAULT_PORTS = frozenset({80, 443})
SETTING = "PREVIEW_EGRESS_ALLOWLIST"
NPM_REGISTRY = "registry.npmjs.org"
# Yarn 1 fetches what its lockfile says, and the public registry's entries there name Yarn's mirror.
YARN_REGISTRY = "registry.yarnpkg.com"


def registry_hosts(host: str) -> tuple[str, ...]:
    """What installs from ``host`` need: the public registry comes with Yarn's mirror of it."""
    return (host, YARN_REGISTRY) if host == NPM_REGISTRY else (host,)


_NAME = re.compile(r"(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking: the proxy knows it from the listener the connection came in on."""

    machine_id: str
    project_id: str


class Refused(Exception):
    """The proxy answers ``status`` with ``message`` as a plain-text body and dials nothing."""

    def __init__(self, message: str, *, status: int = 403) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class Entry:
    """One allowlist entry: a name, ``*.suffix`` (any name below it) or an IP literal; with a port,
    only that port, otherwise 80 and 443."""

    host: str
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> Entry:
        raw = text.strip().lower()
        host, port = raw, None
        if raw.startswith("["):  # [v6] or [v6]:port
            end = raw.find("]")
            host, rest = raw[: end + 1], raw[end + 1 :]
            if end < 0 or (rest and not rest.startswith(":")):
                raise ValueError(f"{text!r} is not host, host:port or [IPv6]:port")
            port = _port(rest[1:], text) if rest else None
        elif raw.count(":") == 1:
            host, _, number = raw.partition(":")
            port = _port(number, text)
        host = host.rstrip(".")
        literal = parse_address(host)
        if literal is not None:
            return cls(str(literal), port)
        name = host.removeprefix("*.")
        if not _NAME.fullmatch(name):
            raise ValueError(f"{text!r} is not a host name, *.domain or IP address")
        return cls(host, port)

    @property
    def address(self) -> IPAddress | None:
        return parse_address(self.host)

    def matches(self, host: str, port: int) -> bool:
        if port not in ({self.port} if self.port else DEFAULT_PORTS):
            return False
        if self.host.startswith("*."):
            return host.endswith(self.host[1:])
        return host == self.host


def parse_allowlist(items: Iterable[str]) -> tuple[Entry, ...]:
    """Entries from setting values; raises ``ValueError`` naming the first bad one."""
    return tuple(Entry.parse(item) for item in items if item.strip())


@dataclass(frozen=True, slots=True)
class PathRule:
    """Requests an internal service lets through: these methods on paths matching ``pattern``, a
    regular expression in which ``{project}`` stands for the caller's own project."""

    methods: frozenset[str]
    pattern: str

    def allows(self, caller: Caller, method: str, path: str) -> bool:
        regex = self.pattern.replace("{project}", re.escape(caller.project_id))
        return method in self.methods and re.fullmatch(regex, path) is not None


@dataclass(frozen=True, slots=True)
class InternalService:
    """A name that exists only for previews (plain HTTP on port 80), mapped to a fixed address the
    operator chose; only requests its rules list pass, whether sent to the proxy or inside a tunnel."""

    name: str
    address: tuple[str, int]
    rules: tuple[PathRule, ...]


@dataclass(frozen=True, slots=True)
class Target:
    """Where a checked request goes: a name to resolve and check, or an internal service's address."""

    host: str
    port: int
    fixed: tuple[str, int] | None = None
    inspected: bool = False  # a tunnel whose inner request is checked like a plain-HTTP one


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    allowlist: tuple[Entry, ...]
    internal: tuple[InternalService, ...] = field(default=())

    def tunnel(self, host: str, port: int) -> Target:
        """A ``CONNECT host:port``: the destination must be on the allowlist. A tunnel to an internal
        service (websocket clients open one even for ``ws://``) is ``inspected``: the proxy reads the
        plain-HTTP request inside and checks it with ``request`` before anything goes on."""
        host = normalise_host(host)
        if any(service.name == host for service in self.internal):
            if port != 80:
                raise Refused(f"{host} answers previews on port 80 only")
            return Target(host, port, inspected=True)
        return self._listed(host, port)

    def request(self, caller: Caller, method: str, host: str, port: int, path: str) -> Target:
        """A plain-HTTP request for an absolute URI: listed destination or an internal service's rule."""
        host = normalise_host(host)
        for service in self.internal:
            if service.name != host:
                continue
            if port != 80:
                raise Refused(f"{host} answers previews on port 80 only")
            if _plain_path(path) and any(rule.allows(caller, method, path) for rule in service.rules):
                return Target(host, port, fixed=service.address)
            raise Refused(
                f"{method} {path[:200]} on {host} is not open to previews: only the preview's own "
                "project snapshot and the Realtime API are (no setting changes this)"
            )
        return self._listed(host, port)

    def check_addresses(self, target: Target, addresses: Sequence[IPAddress]) -> None:
        """Refuse a name that resolved to an internal address the allowlist does not name itself."""
        allowed = {entry.address for entry in self.allowlist if entry.address is not None}
        for address in addresses:
            kind = internal_kind(address)
            if kind is not None and address not in allowed:
                shown = f"[{address}]" if address.version == 6 else str(address)
                raise Refused(
                    f"{target.host} resolves to {address}, {kind} address, which previews may not "
                    f"reach; add {shown} to {SETTING} if it really should be reachable"
                )

    def _listed(self, host: str, port: int) -> Target:
        if not any(entry.matches(host, port) for entry in self.allowlist):
            shown = f"[{host}]" if ":" in host else host
            raise Refused(
                f"{shown}:{port} is not on the egress allowlist; add it to {SETTING} (the "
                "orchestrator's setting) to let previews reach it"
            )
        return Target(host, port)


def normalise_host(host: str) -> str:
    """Lower case, no trailing dot, IP literals in their canonical form; ``Refused`` (400) otherwise."""
    host = host.strip().lower().rstrip(".")
    literal = parse_address(host)
    if literal is not None:
        return str(literal)
    if not _NAME.fullmatch(host):
        raise Refused(f"{host[:100]!r} is not a host name the egress proxy accepts", status=400)
    return host


def _plain_path(path: str) -> bool:
    """No escapes, no dot segments, no empty segments: what a rule sees is what the server gets."""
    if any(c in path for c in "%\\;") or "//" in path:
        return False
    return not any(segment in (".", "..") for segment in path.split("/"))


def _port(text: str, entry: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{entry!r} has no valid port")
    return int(text)
