"""Health checks against a backing machine's agent, as Fly's proxy runs them against a real machine."""

from __future__ import annotations

import httpx

from velocity.providers.base import AgentEndpoint


async def probe_http(endpoint: AgentEndpoint, path: str) -> bool:
    """``GET path`` on the agent (over its unix socket when it has one); any 2xx or 3xx passes."""
    transport = httpx.AsyncHTTPTransport(uds=endpoint.uds) if endpoint.uds else None
    async with httpx.AsyncClient(
        transport=transport, base_url=endpoint.base_url, headers=dict(endpoint.headers), timeout=2.0
    ) as http:
        try:
            response = await http.get(path)
        except httpx.HTTPError:
            return False
    return response.status_code < 400
