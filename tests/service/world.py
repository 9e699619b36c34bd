"""The world of the service tests: an in-memory provider, a fake clock, agents played by a mock."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import httpx

from velocity.auth import Caller
from velocity.clock import FakeClock
from velocity.providers.fake import FakeProvider
from velocity.service import PreviewService, ProjectService
from velocity.settings import Settings
from velocity.store import Store

ALICE = Caller(subject="alice", role="authenticated")
BOB = Caller(subject="bob", role="authenticated")


@dataclass
class Agents:
    """Plays every machine's agent: ``state`` is what /health says (``None``: not answering yet)."""

    state: str | None = "ready"
    detail: str | None = None
    health_calls: int = 0
    asked: asyncio.Event = field(default_factory=asyncio.Event)  # set by the first health check
    lines: list[str] = field(default_factory=lambda: ["vite ready", "GET /"])
    # Claims taken by pooled machines' agents: (machine host, the claim's body).
    claims: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    refuse_claims: bool = False

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/__velocity/claim":
            if self.refuse_claims:
                return httpx.Response(409, json={"error": "conflict", "message": "claimed already"})
            self.claims.append((request.url.host, json.loads(request.content)))
            return httpx.Response(200, json={"state": "ready", "dependencies_changed": False})
        if request.url.path == "/__velocity/logs":
            return httpx.Response(200, json={"lines": [{"stream": "stdout", "line": x} for x in self.lines]})
        self.health_calls += 1
        self.asked.set()
        if self.state is None:
            raise httpx.ConnectError("agent socket not there yet", request=request)
        # Every machine says it is pooled until a claim names it (a preview's own ignores that).
        pooled = all(host != request.url.host for host, _ in self.claims)
        body = {"state": self.state, "detail": self.detail, "protocol": 1, "pooled": pooled}
        return httpx.Response(200 if self.state != "failed" else 503, json=body)


@dataclass
class World:
    service: PreviewService
    projects: ProjectService
    provider: FakeProvider
    clock: FakeClock
    agents: Agents
    store: Store
    settings: Settings
