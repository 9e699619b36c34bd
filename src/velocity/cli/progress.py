"""A booting preview's progress, read from its event stream (``GET /v1/previews/{id}/events``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from velocity.cli.client import Api

BOOTING = frozenset({"provisioning", "booting"})


def events(api: Api, preview_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(kind, data) of each Server-Sent Event, until the server ends the stream."""
    headers = {"Authorization": f"Bearer {api.token}", "Accept": "text/event-stream"}
    timeout = httpx.Timeout(30.0, read=None)  # keepalives come every 15 s; the stream may last long
    with (
        httpx.Client(base_url=api.base, headers=headers, timeout=timeout) as client,
        client.stream("GET", f"/v1/previews/{preview_id}/events") as response,
    ):
        response.raise_for_status()
        kind, data = "", ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line[len("event: ") :]
            elif line.startswith("data: "):
                data = line[len("data: ") :]
            elif not line and data:
                yield kind, json.loads(data)
                kind, data = "", ""


def follow(api: Api, preview_id: str, show: Callable[[str], None]) -> bool:
    """Show each state and each of the agent's status messages until the preview is no longer
    booting; False if the stream could not be read (an older orchestrator: poll instead)."""
    try:
        for kind, data in events(api, preview_id):
            if kind == "state":
                show(data["state"])
                if data["state"] not in BOOTING:
                    return True
            elif kind == "status":
                show(f"{data.get('state')}: {data.get('detail')}")
    except (httpx.HTTPError, ValueError, KeyError):
        return False
    return True
