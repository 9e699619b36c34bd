"""The composition root: settings in, a running orchestrator (store, provider, service, ASGI app) out."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr
from starlette.routing import Mount, Router
from starlette.types import ASGIApp

from velocity.api import create_api
from velocity.api.limits import BodyLimit
from velocity.api.request_ids import RequestIds
from velocity.auth import AGENT_ROLE, JwksCache, SigningKey, TokenIssuer, TokenVerifier, load_or_create_secret
from velocity.auth.jwks import Fetch
from velocity.clock import Clock, SystemClock
from velocity.domain import ConfigError, DatabaseUnavailable, Preview, Unavailable
from velocity.egress import CALLER_HEADER
from velocity.loops import LoopMonitor, Replica, run_maintenance, supervise
from velocity.loops.pool import run_pool
from velocity.loops.webhooks import Webhooks
from velocity.providers.base import MachineProvider
from velocity.realtime import RealtimeHub
from velocity.router import PreviewRouter
from velocity.router.gate import Gate
from velocity.service import AgentClient, PreviewService, ProjectService
from velocity.service.access import PreviewAccess
from velocity.service.channels import ChannelAccess, client_key, from_previews
from velocity.service.events import PreviewEvents
from velocity.service.pool import WarmPool, load_template
from velocity.service.rows import RecentRows
from velocity.settings import ProviderKind, Settings
from velocity.store import Store

log = logging.getLogger(__name__)

REALTIME_PATH = "/realtime/v1"  # where Supabase serves Realtime, and SUPABASE_URL's local default points


def resolve_local_defaults(settings: Settings) -> Settings:
    """Fill what a laptop has no account for: the JWT secret, the anon key, the Realtime URL."""
    updates: dict[str, object] = {}
    if settings.supabase_jwt_secret is None:
        updates["supabase_jwt_secret"] = SecretStr(load_or_create_secret(settings.data_dir / "secrets.json"))
    if settings.supabase_url is None:
        updates["supabase_url"] = settings.orchestrator_url
    resolved = settings.model_copy(update=updates)
    if resolved.supabase_anon_key is None:
        anon = issuer_for(resolved).mint_anon()
        resolved = resolved.model_copy(update={"supabase_anon_key": SecretStr(anon)})
    return resolved


def issuer_for(settings: Settings, signing_key: SigningKey | None = None) -> TokenIssuer:
    if settings.supabase_jwt_secret is None:
        raise ConfigError("SUPABASE_JWT_SECRET is not set and no local secret was made")
    return TokenIssuer(
        signing_key=signing_key,
        secret=settings.supabase_jwt_secret.get_secret_value(),
        issuer=f"{(settings.supabase_url or settings.orchestrator_url).rstrip('/')}/auth/v1",
    )


def _jwks_over_http(issuer: str) -> Fetch:
    """Fetch ``<SUPABASE_URL>/auth/v1/.well-known/jwks.json`` (locally: this orchestrator's own)."""

    async def fetch() -> Mapping[str, Any]:
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                response = await client.get(f"{issuer}/.well-known/jwks.json")
                response.raise_for_status()
                document: Mapping[str, Any] = response.json()
                return document
        except (httpx.HTTPError, ValueError) as exc:
            raise Unavailable(f"cannot verify tokens: the JWKS at {issuer} is unreachable ({exc})") from exc

    return fetch


def make_provider(settings: Settings) -> MachineProvider:
    if settings.preview_provider == ProviderKind.LOCAL:
        from velocity.providers.local import LocalSandboxProvider, SandboxOptions
        from velocity.providers.local.network import NetworkOptions, listen_address

        network = NetworkOptions(
            orchestrator_url=settings.orchestrator_url,
            orchestrator_address=listen_address(settings.velocity_host, settings.velocity_port),
            allowlist=tuple(settings.preview_egress_allowlist)
            if settings.preview_egress_allowlist is not None
            else None,
            supabase_url=settings.supabase_url,
        )
        return LocalSandboxProvider(
            SandboxOptions(
                network=network,
                root=settings.data_dir / "sandboxes",
                npm_cache=settings.npm_cache_dir,
                npm_cache_mb=settings.local_npm_cache_mb,
                modules_cache=settings.modules_cache_dir,
                modules_cache_entries=settings.local_modules_cache_entries,
                sandbox_uid=settings.local_sandbox_uid,
                agent_uid=settings.local_agent_uid,
                pids_max=settings.local_sandbox_pids_max,
                allow_unisolated=settings.local_sandbox_allow_unisolated,
            )
        )
    from velocity.providers.fly import FlyProvider

    return FlyProvider.from_settings(settings, agent_route=settings.fly_agent_route)


# The pool's template when WARM_POOL_TEMPLATE is unset: the example this repository previews.
BUNDLED_TEMPLATE = Path(__file__).resolve().parents[2] / "examples" / "react-vite"


@dataclass
class Runtime:
    settings: Settings
    store: Store
    provider: MachineProvider
    previews: PreviewService
    projects: ProjectService
    issuer: TokenIssuer
    agents: AgentClient
    clock: Clock
    verifier: TokenVerifier
    signing_key: SigningKey | None
    access: PreviewAccess
    monitor: LoopMonitor
    replica: Replica
    _loops: asyncio.Task[None] | None = field(default=None, repr=False)
    _router: PreviewRouter | None = field(default=None, repr=False)
    hub: RealtimeHub | None = field(default=None, repr=False)  # hosted when SUPABASE_URL is ours
    preview_events: PreviewEvents | None = field(default=None, repr=False)
    webhooks: Webhooks | None = field(default=None, repr=False)  # with WEBHOOK_URL

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        provider: MachineProvider | None = None,
        clock: Clock | None = None,
        agents: AgentClient | None = None,
        jwks_fetch: Fetch | None = None,
    ) -> Runtime:
        settings = resolve_local_defaults(settings)
        # Others may pass through (a sandbox's uid reaches its own workspace below) but not list it.
        settings.data_dir.mkdir(mode=0o711, parents=True, exist_ok=True)
        store = Store.from_url(settings.sqlalchemy_url)
        await store.migrate()
        provider = provider or make_provider(settings)
        start_watching = getattr(provider, "start_watching", None)
        if start_watching is not None:
            await start_watching()
        clock = clock or SystemClock()
        # Locally the orchestrator plays Supabase Auth: it signs user tokens and publishes the JWKS.
        local_auth = settings.supabase_url == settings.orchestrator_url
        signing_key = SigningKey.load_or_create(settings.data_dir / "signing-key.pem") if local_auth else None
        issuer = issuer_for(settings, signing_key)
        verifier = TokenVerifier(
            issuer=issuer.issuer,
            hs256_secret=settings.supabase_jwt_secret.get_secret_value()
            if settings.supabase_jwt_secret
            else None,
            jwks=JwksCache(jwks_fetch or _jwks_over_http(issuer.issuer), clock=clock),
        )
        agents = agents or AgentClient()
        monitor = LoopMonitor(clock, instance_id(settings))
        replica = Replica(store, clock, monitor, interval=settings.cleanup_interval_seconds)
        rows = RecentRows(store)  # what the router reads per request, shared by access and routing
        pool = None
        if settings.warm_pool_size > 0:
            template = await asyncio.to_thread(
                load_template,
                settings.warm_pool_template or BUNDLED_TEMPLATE,
                max_bytes=settings.max_project_bytes,
            )
            pool = WarmPool(
                store=store,
                provider=provider,
                agents=agents,
                issuer=issuer,
                settings=settings,
                clock=clock,
                instance=monitor.instance,
                template=template,
            )
        previews = PreviewService(
            pool=pool,
            rows=rows,
            store=store,
            provider=provider,
            agents=agents,
            issuer=issuer,
            settings=settings,
            clock=clock,
            instance=monitor.instance,
        )
        projects = ProjectService(store=store, clock=clock, max_bytes=settings.max_project_bytes, rows=rows)
        await projects.adopt_legacy_snapshots(settings.data_dir / "projects")
        access = PreviewAccess(store=store, issuer=issuer, settings=settings, clock=clock, rows=rows)
        webhooks = None
        if settings.webhook_url is not None and settings.webhook_secret is not None:
            webhooks = Webhooks(
                store,
                clock,
                url=settings.webhook_url,
                secret=settings.webhook_secret.get_secret_value(),
                max_attempts=settings.webhook_max_attempts,
                retry_seconds=settings.webhook_retry_seconds,
            )
        return cls(
            settings,
            store,
            provider,
            previews,
            projects,
            issuer,
            agents,
            clock,
            verifier,
            signing_key,
            access,
            monitor,
            replica,
            webhooks=webhooks,
        )

    def asgi(self) -> ASGIApp:
        hub = self._realtime_hub()
        self.preview_events = PreviewEvents(self.previews, listen=hub.listen if hub else None)
        api = create_api(
            previews=self.previews,
            projects=self.projects,
            verifier=self.verifier,
            access=self.access,
            jwks=self.signing_key.jwks() if self.signing_key else None,
            settings=self.settings,
            provider_name=self.provider.name,
            monitor=self.monitor,
            preview_events=self.preview_events,
            webhook_deliveries=self.store.deliveries,
        )
        limited = BodyLimit(
            RequestIds(api),
            default=self.settings.max_request_body_bytes,
            prefixes={"/v1/projects/": self.settings.max_project_bytes * 2},
        )
        self._router = PreviewRouter(
            # The API as the default, not Mount(""): a mount's pattern misses paths with a newline,
            # which would get Starlette's plain-text 404 instead of the API's JSON errors.
            Router([Mount(REALTIME_PATH, app=from_previews(hub.app, header=CALLER_HEADER))], default=limited)
            if hub
            else limited,
            service=self.previews,
            domain=self.settings.preview_domain,
            replay_app=self.settings.fly_app_name if self.settings.fly_replay else None,
            gate=Gate(self.access, self.verifier),
        )
        return self._router

    def _realtime_hub(self) -> RealtimeHub | None:
        """Locally the orchestrator is SUPABASE_URL: it hosts the Realtime hub of the preview channels."""
        if self.hub is None and self.settings.supabase_url == self.settings.orchestrator_url:
            channels = ChannelAccess(self.verifier, self.store)
            hub = self.hub = RealtimeHub(
                channels.verify,
                authorizer=channels.authorize,
                clock=self.clock,
                client_key=client_key(CALLER_HEADER),
            )

            def revoke_agent(preview: Preview) -> None:
                # Its agent's channels end with the preview: the token is no longer good for them.
                hub.revoke(
                    lambda claims: (
                        claims.get("role") == AGENT_ROLE and claims.get("preview_id") == preview.id
                    ),
                    f"preview {preview.id} has ended: its agent's token is revoked",
                )

            self.previews.on_end(revoke_agent)
        return self.hub

    async def close_streams(self) -> None:
        """End the long-lived connections (Realtime sockets, event streams) before the server stops,
        which would otherwise wait for them."""
        if self.preview_events is not None:
            await self.preview_events.aclose()
        if self.hub is not None:
            await self.hub.close()

    async def start_loops(self) -> asyncio.Task[None]:
        """The replica's heartbeat and the maintenance loops, under one supervisor: the task ends only
        when a loop dies of a bug, with that loop's error (``Running.wait`` then stops the server)."""
        await self.replica.beat()  # so that a first replica leads, and passes, at once
        interval = self.settings.cleanup_interval_seconds
        loops = {
            "replica": self.replica.run(),
            "maintenance": run_maintenance(
                self.previews, self.clock, self.replica, self.monitor, interval=interval
            ),
        }
        if self.previews.pool is not None:
            loops["pool"] = run_pool(self.previews.pool, self.store, self.clock, self.replica, self.monitor)
        if self.webhooks is not None:
            loops["webhooks"] = self.webhooks.run(self.replica, self.monitor)
        self._loops = asyncio.create_task(supervise(loops), name="loops")
        return self._loops

    async def close(self, *, stop_previews: bool) -> None:
        await self.close_streams()
        if self._loops is not None:
            self._loops.cancel()
            with suppress(asyncio.CancelledError, Exception):  # a loop's failure is Running.wait's
                await self._loops
        if stop_previews:
            await self.previews.stop_all("the orchestrator is shutting down")
            if self.previews.pool is not None:
                await self.previews.pool.drain()
        with suppress(DatabaseUnavailable):
            await self.replica.leave()  # the others take over its previews at once
        await self.previews.close()
        if self._router is not None:
            await self._router.aclose()
        await self.agents.aclose()
        if self.webhooks is not None:
            await self.webhooks.aclose()
        await self.provider.aclose()
        await self.store.dispose()


def instance_id(settings: Settings) -> str:
    """This replica's name among those on the database: ``VELOCITY_INSTANCE_ID``, or the Fly machine's
    id on Fly (either kept across restarts, so a restarted replica picks up its own previews' work at
    once), elsewhere the host and process (a restart waits an interval for the old one's to pass)."""
    if settings.velocity_instance_id:
        return settings.velocity_instance_id
    if settings.fly_machine_id:
        return settings.fly_machine_id
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"
