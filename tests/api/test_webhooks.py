"""Signed webhooks, received by a real HTTP server on loopback: each preview event once delivered,
in order, signed as Stripe signs (HMAC-SHA256 over the timestamp and the body), retried with backoff
after a failure, and every attempt in the delivery log."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import Response

from tests.api.conftest import Orchestrator, in_process
from tests.api.test_previews_api import import_project
from tests.proxy.harness import serve
from velocity.domain.webhook_signature import verify
from velocity.loops.webhooks import Webhooks
from velocity.settings import Settings

SECRET = "whsec-test"


@dataclass
class Receiver:
    """Answers ``fail_first`` of each event kind with a 500, then 200; keeps every request."""

    fail_first: dict[str, int] = field(default_factory=dict)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        request = Request(scope, receive)
        body = await request.body()
        self.received.append((dict(request.headers), body))
        self.arrived.set()
        kind = request.headers.get("velocity-event", "")
        if self.fail_first.get(kind, 0) > 0:
            self.fail_first[kind] -= 1
            await Response("not now", status_code=500)(scope, receive, send)
            return
        await Response(status_code=204)(scope, receive, send)

    async def until(self, count: int, within: float = 10) -> None:
        async with asyncio.timeout(within):
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    hooks = Receiver(fail_first={"preview.ready": 1})
    async with serve(hooks) as url:
        yield hooks, f"{url}/hooks"


@pytest.fixture
async def orchestrator(tmp_path: Path, receiver: tuple[Receiver, str]) -> AsyncIterator[Orchestrator]:
    settings = Settings(
        velocity_data_dir=tmp_path,
        webhook_url=receiver[1],
        webhook_secret=SECRET,
        webhook_retry_seconds=0.05,
        _env_file=None,  # type: ignore[call-arg]
    )
    async with in_process(settings) as (made, _app):
        await made.runtime.start_loops()
        yield made


def signed(headers: dict[str, str], body: bytes) -> bool:
    """The receiver's own check, as its docs would tell it to write one."""
    parts = dict(part.split("=", 1) for part in headers["velocity-signature"].split(","))
    expected = hmac.new(SECRET.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
    fresh = abs(time.time() - int(parts["t"])) < 300
    return fresh and hmac.compare_digest(expected, parts["v1"])


async def test_each_event_of_a_preview_arrives_once_in_order_signed_and_retried_after_a_failure(
    orchestrator: Orchestrator, receiver: tuple[Receiver, str]
) -> None:
    hooks, _url = receiver
    await import_project(orchestrator)
    created = await orchestrator.client.post(
        "/v1/previews", json={"project_id": "my-app"}, headers=orchestrator.auth()
    )
    preview_id = created.json()["id"]
    await orchestrator.runtime.previews.settled(preview_id, timeout=5)
    deleted = await orchestrator.client.delete(f"/v1/previews/{preview_id}", headers=orchestrator.auth())
    assert deleted.status_code == 200
    await hooks.until(4)  # created, ready (refused once), ready again, stopped

    kinds = [headers["velocity-event"] for headers, _ in hooks.received]
    assert kinds == ["preview.created", "preview.ready", "preview.ready", "preview.stopped"]
    assert all(signed(headers, body) for headers, body in hooks.received)
    assert all(verify(SECRET, h["velocity-signature"], b, now=int(time.time())) for h, b in hooks.received)
    assert not verify(
        "another-secret",
        hooks.received[0][0]["velocity-signature"],
        hooks.received[0][1],
        now=int(time.time()),
    )
    bodies = [json.loads(body) for _, body in hooks.received]
    assert [b["data"]["preview"]["id"] for b in bodies] == [preview_id] * 4
    assert bodies[0]["data"]["preview"]["user_id"] == "alice"
    assert bodies[1]["id"] == bodies[2]["id"], "a retry is the same delivery"
    assert hooks.received[1][0]["velocity-delivery"] == hooks.received[2][0]["velocity-delivery"]
    assert [b["id"] for b in bodies] == sorted(b["id"] for b in bodies)

    operator = {"Authorization": f"Bearer {orchestrator.runtime.issuer.mint_user('ops', operator=True)}"}
    log = (await orchestrator.client.get("/v1/admin/webhooks", headers=operator)).json()
    assert log["enabled"] is True
    ready = [d for d in log["deliveries"] if d["kind"] == "preview.ready"]
    assert [(d["attempt"], d["status_code"], d["delivered"], d["final"]) for d in reversed(ready)] == [
        (1, 500, False, False),
        (2, 204, True, True),
    ]
    assert "HTTP 500" in ready[-1]["error"]
    forbidden = await orchestrator.client.get("/v1/admin/webhooks", headers=orchestrator.auth())
    assert forbidden.status_code == 403


async def test_an_event_the_receiver_never_takes_is_given_up_on_and_the_next_still_sent(
    tmp_path: Path,
) -> None:
    hooks = Receiver(fail_first={"preview.created": 100})
    async with serve(hooks) as url:
        settings = Settings(
            velocity_data_dir=tmp_path,
            webhook_url=f"{url}/hooks",
            webhook_secret=SECRET,
            webhook_retry_seconds=0.01,
            webhook_max_attempts=3,
            _env_file=None,  # type: ignore[call-arg]
        )
        async with in_process(settings) as (o, _app):
            await o.runtime.start_loops()
            await import_project(o)
            created = await o.client.post("/v1/previews", json={"project_id": "my-app"}, headers=o.auth())
            await o.runtime.previews.settled(created.json()["id"], timeout=5)
            await hooks.until(4)
            kinds = [headers["velocity-event"] for headers, _ in hooks.received]
            assert kinds == ["preview.created"] * 3 + ["preview.ready"]
            assert o.runtime.webhooks is not None
            log = await o.runtime.store.deliveries()
            given_up = [d for d in log if d.kind == "preview.created" and d.final]
            assert len(given_up) == 1 and not given_up[0].delivered and given_up[0].attempt == 3


async def test_a_new_leader_sends_what_the_last_one_left_unsent(tmp_path: Path) -> None:
    """Where sending started is in the delivery log, not in a process: a leader that dies before
    sending leaves its events to the next one."""
    hooks = Receiver()
    async with serve(hooks) as url:
        settings = Settings(velocity_data_dir=tmp_path, _env_file=None)  # type: ignore[call-arg]
        async with in_process(settings) as (o, _app):

            def leader() -> Webhooks:
                return Webhooks(
                    o.runtime.store,
                    o.runtime.clock,
                    url=f"{url}/hooks",
                    secret=SECRET,
                    max_attempts=2,
                    retry_seconds=0.01,
                )

            first = leader()
            assert await first.deliver_pending() == 0  # it starts here, then dies before sending
            await first.aclose()
            await import_project(o)
            created = await o.client.post("/v1/previews", json={"project_id": "my-app"}, headers=o.auth())
            await o.runtime.previews.settled(created.json()["id"], timeout=5)
            second = leader()
            try:
                assert await second.deliver_pending() == 2
            finally:
                await second.aclose()
            assert [h["velocity-event"] for h, _ in hooks.received] == ["preview.created", "preview.ready"]
            log = await o.runtime.store.deliveries()
            assert [d.kind for d in log][-1] == "webhooks.started"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"webhook_url": "https://hooks.example.com/v"}, "WEBHOOK_URL is set but WEBHOOK_SECRET is not"),
        ({"webhook_url": "hooks.example.com", "webhook_secret": "s"}, "WEBHOOK_URL must be an http(s) URL"),
    ],
)
def test_webhook_settings_that_cannot_work_are_refused_by_name(
    overrides: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Settings(_env_file=None, **overrides)  # type: ignore[call-arg,arg-type]
