"""A local sandbox's network: its own namespace with loopback only, and the egress proxy as the way out.

Each sandbox gets a unix socket of its own for the proxy (``<machine>/egress/proxy.sock``, bound
read-only at ``/run/egress``), so the proxy knows which preview calls without believing anything the
preview says. Inside, the agent's bridge listens on 127.0.0.1:3128 and the proxy variables point there.
The orchestrator gets a name that exists only through the proxy, ``orchestrator.velocity.internal``,
mapped to the address it listens on and open for the preview's own snapshot, the warm pool's template (which only a pool token opens)
and Realtime alone; the
provider rewrites ``SNAPSHOT_URL`` and ``SUPABASE_URL`` that point at the orchestrator to that name.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from velocity.domain import ConfigError
from velocity.egress import Caller, EgressPolicy, EgressProxy, InternalService, PathRule, parse_allowlist
from velocity.egress.policy import registry_hosts

log = logging.getLogger(__name__)

ORCHESTRATOR_NAME = "orchestrator.velocity.internal"
EGRESS_DIR = "/run/egress"
EGRESS_SOCKET = f"{EGRESS_DIR}/proxy.sock"
BRIDGE = "127.0.0.1:3128"
# Every sandbox has its own loopback, so the dev server's port is the same everywhere.
DEV_PORT = "5173"
DEFAULT_REGISTRY = "https://registry.npmjs.org/"
REWRITTEN = ("SNAPSHOT_URL", "SUPABASE_URL")
ORCHESTRATOR_RULES = (
    PathRule(frozenset({"GET", "HEAD"}), r"/v1/projects/{project}/snapshot"),
    PathRule(frozenset({"GET", "HEAD"}), r"/v1/pool/template"),  # for pooled machines' agents only
    PathRule(frozenset({"GET", "POST"}), r"/realtime/v1/[A-Za-z0-9_./-]*"),
)


@dataclass(frozen=True, slots=True)
class NetworkOptions:
    """What isolating sandboxes needs from the orchestrator."""

    orchestrator_url: str  # as the service writes it into machines' SNAPSHOT_URL and SUPABASE_URL
    orchestrator_address: tuple[str, int]  # where the orchestrator listens, dialled by the proxy
    allowlist: tuple[str, ...] | None = None  # PREVIEW_EGRESS_ALLOWLIST; None: the defaults
    supabase_url: str | None = None


class SandboxNetwork:
    """The egress proxy and one listener per sandbox. The policy is settled on first use: it needs
    npm's registry, which npm is asked for at once (about 100 ms) while the orchestrator starts."""

    def __init__(self, options: NetworkOptions) -> None:
        self._options = options
        self._proxy: EgressProxy | None = None
        self._registry = DEFAULT_REGISTRY
        self._settling = asyncio.Lock()
        self._lookup = _ask_npm_for_registry()

    async def open(self, machine_id: str, project_id: str, directory: Path) -> None:
        """Listen for one sandbox in ``directory`` (made here; bound into the sandbox read-only)."""
        proxy = await self._settled()
        os.makedirs(directory, exist_ok=True)
        os.chmod(directory, 0o755)
        await proxy.listen_unix(directory / "proxy.sock", Caller(machine_id, project_id))

    async def close(self, machine_id: str) -> None:
        if self._proxy is not None:
            await self._proxy.close_listener(machine_id)

    async def aclose(self) -> None:
        if self._lookup is not None:
            self._lookup.kill()
            await asyncio.to_thread(self._lookup.communicate)
            self._lookup = None
        if self._proxy is not None:
            await self._proxy.aclose()

    def env(self, spec_env: Mapping[str, str]) -> dict[str, str]:
        """The sandbox's variables for its network, and the orchestrator URLs rewritten to the proxy name."""
        proxy = f"http://{BRIDGE}"
        env = {
            "AGENT_EGRESS_SOCKET": EGRESS_SOCKET,
            "AGENT_EGRESS_LISTEN": BRIDGE,
            "HTTP_PROXY": proxy,
            "HTTPS_PROXY": proxy,
            "http_proxy": proxy,
            "https_proxy": proxy,
            "NO_PROXY": "127.0.0.1,localhost,::1",
            "no_proxy": "127.0.0.1,localhost,::1",
            # Node's own fetch ignores the variables above unless told (Node 22.21 / 24 and later).
            "NODE_USE_ENV_PROXY": "1",
            "NPM_CONFIG_REGISTRY": self._registry,
        }
        if "AGENT_DEV_PORT" not in spec_env:
            env["AGENT_DEV_PORT"] = DEV_PORT
        base = self._options.orchestrator_url.rstrip("/")
        for name in REWRITTEN:
            value = spec_env.get(name)
            if value is not None and (value == base or value.startswith(base + "/")):
                env[name] = f"http://{ORCHESTRATOR_NAME}{value[len(base) :]}"
        return env

    async def _settled(self) -> EgressProxy:
        async with self._settling:
            if self._proxy is None:
                options = self._options
                if self._lookup is not None:
                    self._registry = await asyncio.to_thread(_registry_from, self._lookup)
                    self._lookup = None
                entries = options.allowlist
                if entries is None:
                    entries = default_allowlist(
                        self._registry, options.supabase_url, options.orchestrator_url
                    )
                try:
                    allowlist = parse_allowlist(entries)
                except ValueError as exc:
                    raise ConfigError(f"PREVIEW_EGRESS_ALLOWLIST: {exc}") from exc
                service = InternalService(ORCHESTRATOR_NAME, options.orchestrator_address, ORCHESTRATOR_RULES)
                self._proxy = EgressProxy(EgressPolicy(allowlist, internal=(service,)))
                log.info("previews may reach: %s", ", ".join(entries) or "nothing but the orchestrator")
            return self._proxy


def default_allowlist(registry: str, supabase_url: str | None, orchestrator_url: str) -> tuple[str, ...]:
    """The npm registry's host (with Yarn's mirror for the public one), and SUPABASE_URL's when
    Supabase is not this orchestrator."""
    entries = [*registry_hosts(_authority(registry))]
    if supabase_url and supabase_url.rstrip("/") != orchestrator_url.rstrip("/"):
        entries.append(_authority(supabase_url))
    return tuple(entry for entry in entries if entry)


def listen_address(host: str, port: int) -> tuple[str, int]:
    """Where the proxy reaches an orchestrator bound to ``host``: a wildcard means its loopback."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host), port


def _ask_npm_for_registry() -> subprocess.Popen[bytes] | None:
    """Start ``npm config get registry`` (the registry npm is configured with on this host)."""
    npm = shutil.which("npm")
    if npm is None:
        return None
    try:
        return subprocess.Popen(
            [npm, "config", "get", "registry"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "NPM_CONFIG_UPDATE_NOTIFIER": "false"},
        )
    except OSError as exc:
        log.warning("cannot ask npm for its registry (%s); using %s", exc, DEFAULT_REGISTRY)
        return None


def _registry_from(lookup: subprocess.Popen[bytes]) -> str:
    try:
        out, _ = lookup.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        lookup.kill()
        lookup.communicate()
        log.warning("npm did not name its registry within 15 s; using %s", DEFAULT_REGISTRY)
        return DEFAULT_REGISTRY
    registry = out.decode().strip()
    return registry if registry.startswith(("http://", "https://")) else DEFAULT_REGISTRY


def _authority(url: str) -> str:
    parts = urlsplit(url)
    if not parts.hostname:
        return ""
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{parts.port}" if parts.port else host
