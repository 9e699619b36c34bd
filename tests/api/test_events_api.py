"""GET /v1/previews/{id}/events as Server-Sent Events, and GET /v1/realtime for editors."""

from __future__ import annotations

import json
from typing import Any

from tests.api.conftest import Orchestrator
from tests.api.test_previews_api import import_project


async def ended_preview(o: Orchestrator) -> str:
    await import_project(o)
    created = await o.client.post("/v1/previews", json={"project_id": "my-app"}, headers=o.auth())
    preview_id: str = created.json()["id"]
    await o.runtime.previews.settled(preview_id, timeout=5)
    assert (await o.client.delete(f"/v1/previews/{preview_id}", headers=o.auth())).status_code == 200
    return preview_id


def parse(body: str) -> list[dict[str, Any]]:
    messages = []
    for block in body.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        messages.append(
            {"id": fields.get("id"), "event": fields["event"], "data": json.loads(fields["data"])}
        )
    return messages


async def test_the_events_of_an_ended_preview_are_its_states_then_the_end(orchestrator: Orchestrator) -> None:
    """text/event-stream, one ``state`` message per state with its id, and the response ends."""
    preview_id = await ended_preview(orchestrator)
    response = await orchestrator.client.get(f"/v1/previews/{preview_id}/events", headers=orchestrator.auth())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-store"
    messages = parse(response.text)
    assert [m["data"]["state"] for m in messages] == [
        "provisioning",
        "booting",
        "ready",
        "stopping",
        "stopped",
    ]
    assert {m["event"] for m in messages} == {"state"}
    resumed = await orchestrator.client.get(
        f"/v1/previews/{preview_id}/events",
        headers={**orchestrator.auth(), "Last-Event-ID": str(messages[2]["id"])},
    )
    assert [m["data"]["state"] for m in parse(resumed.text)] == ["stopping", "stopped"]


async def test_another_users_preview_events_are_404_before_any_stream(orchestrator: Orchestrator) -> None:
    """The ownership check answers as JSON, not as an empty stream."""
    preview_id = await ended_preview(orchestrator)
    response = await orchestrator.client.get(
        f"/v1/previews/{preview_id}/events", headers=orchestrator.auth("bob")
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    unsigned = await orchestrator.client.get(f"/v1/previews/{preview_id}/events")
    assert unsigned.status_code == 401


async def test_editors_learn_where_the_realtime_channels_are(orchestrator: Orchestrator) -> None:
    """Locally: the orchestrator's own hub and the anon key, with the contract's version."""
    body = (await orchestrator.client.get("/v1/realtime", headers=orchestrator.auth())).json()
    settings = orchestrator.runtime.settings
    assert body["url"] == f"{settings.orchestrator_url}/realtime/v1"
    assert (
        settings.supabase_anon_key is not None
        and body["anon_key"] == settings.supabase_anon_key.get_secret_value()
    )
    assert body["contract"] == 1
