"""Talking to a machine's agent: health (with long-poll for readiness) and logs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from velocity.domain import AgentError
from velocity.providers.base import AgentEndpoint


@dataclass(frozen=True, slots=True)
class AgentHealth:
    state: str  # fetching | installing | starting | ready | failed
    detail: str | None
    protocol: int
    raw: dict[str, Any]

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    @property
    def failed(self) -> bool:
        return self.state == "failed"


class AgentClient:
    """One pooled httpx client per transport (a unix socket path, or TCP).

    Tests inject ``transport`` (``httpx.MockTransport``) to play the agent.
    """

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._clients: dict[str | None, httpx.AsyncClient] = {}
        self._transport = transport

    def _client(self, endpoint: AgentEndpoint) -> httpx.AsyncClient:
        client = self._clients.get(endpoint.uds)
        if client is None:
            transport = self._transport or (
                httpx.AsyncHTTPTransport(uds=endpoint.uds) if endpoint.uds else None
            )
            client = httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(10.0, connect=2.0))
            self._clients[endpoint.uds] = client
        return client

    async def health(self, endpoint: AgentEndpoint, *, wait_ready: float = 0) -> AgentHealth:
        """The agent's state; with ``wait_ready`` the agent answers once ready or failed (long-poll)."""
        params = {"wait": "ready", "timeout": str(wait_ready)} if wait_ready else {}
        try:
            response = await self._client(endpoint).get(
                f"{endpoint.base_url}/health",
                params=params,
                headers=dict(endpoint.headers),
                timeout=wait_ready + 10.0,
            )
        except httpx.HTTPError as exc:
            raise AgentError(f"agent unreachable: {type(exc).__name__}") from exc
        try:
            body = response.json()
        except ValueError:
            raise AgentError(f"agent answered /health with {response.status_code} and no JSON") from None
        return AgentHealth(
            state=str(body.get("state", "unknown")),
            detail=body.get("detail"),
            protocol=int(body.get("protocol", 0)),
            raw=body,
        )

    async def claim(self, endpoint: AgentEndpoint, body: dict[str, str]) -> dict[str, Any]:
        """Hand a pooled machine's agent its preview (``agent.claim``); what it became."""
        try:
            response = await self._client(endpoint).post(
                f"{endpoint.base_url}/__velocity/claim", json=body, headers=dict(endpoint.headers)
            )
        except httpx.HTTPError as exc:
            raise AgentError(f"pooled agent unreachable: {type(exc).__name__}") from exc
        try:
            answer: dict[str, Any] = response.json()
        except ValueError:
            answer = {}
        if response.status_code != 200:
            why = answer.get("message") or f"HTTP {response.status_code}"
            raise AgentError(f"the pooled agent refused the claim: {why}")
        return answer

    async def logs(self, endpoint: AgentEndpoint, *, tail: int = 200) -> list[dict[str, Any]]:
        try:
            response = await self._client(endpoint).get(
                f"{endpoint.base_url}/__velocity/logs", params={"tail": tail}, headers=dict(endpoint.headers)
            )
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise AgentError(f"agent logs unavailable: {type(exc).__name__}") from exc
        lines = response.json().get("lines", [])
        return list(lines)

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
