"""Listeners inside the server: every broadcast on a topic, from clients or REST, until unsubscribed."""

from __future__ import annotations

from typing import Any

import httpx

from tests.realtime.hub_server import TOPIC, Served
from tests.realtime.realtime_clients import eventually, kind


async def test_a_listener_sees_client_rest_and_server_broadcasts_of_its_topic_only(served: Served) -> None:
    """Public and private channels of the topic, in order; other topics are not its business."""
    seen: list[tuple[str, Any]] = []
    stop = served.hub.listen(TOPIC, lambda event, payload: seen.append((event, payload)))
    sender = await served.python()
    channel = await sender.subscribe(TOPIC)
    await channel.send_broadcast("status", {"state": "installing"})
    body = {
        "messages": [
            {"topic": TOPIC, "event": "log", "payload": {"line": "x"}, "private": True},
            {"topic": "preview:other", "event": "log", "payload": {"line": "not mine"}},
        ]
    }
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{served.http_url}/api/broadcast", json=body, headers={"apikey": served.apikey}
        )
    assert response.status_code == 202
    served.hub.publish(TOPIC, "status", {"state": "ready"})
    await eventually(lambda: len(seen) == 3)
    assert seen == [
        ("status", {"state": "installing"}),
        ("log", {"line": "x"}),
        ("status", {"state": "ready"}),
    ]
    stop()
    served.hub.publish(TOPIC, "status", {"state": "error"})
    assert len(seen) == 3


async def test_a_failing_listener_stops_neither_the_others_nor_the_subscribers(served: Served) -> None:
    """An exception in one listener is logged; fan-out to everybody else goes on."""
    seen: list[str] = []

    def broken(event: str, payload: Any) -> None:
        raise RuntimeError("listener bug")

    served.hub.listen(TOPIC, broken)
    served.hub.listen(TOPIC, lambda event, payload: seen.append(event))
    receiver = await served.python()
    await receiver.subscribe(TOPIC)
    assert served.hub.publish(TOPIC, "status", {}) == 1
    assert seen == ["status"]
    await receiver.log.expect(kind("broadcast", event="status"))
