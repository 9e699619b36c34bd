"""Signed webhooks of preview events, from the store's event log, on the leader.

The events are the state changes every replica records (``preview_events``): ``preview.created``
(provisioning), ``preview.ready``, ``preview.failed`` and ``preview.stopped``. The leader sends them
in the order they were recorded, one at a time, so a receiver sees a preview's events in order.
Each is a POST of JSON to ``WEBHOOK_URL`` with ``Velocity-Signature`` (``domain.webhook_signature``),
``Velocity-Event`` and ``Velocity-Delivery`` (the event's id: the same on every retry, for the
receiver to drop duplicates, which a change of leader can cause). A 2xx is delivered; anything else,
or no answer within 10 s, is tried again after ``WEBHOOK_RETRY_SECONDS``, doubling up to 60 s, for
``WEBHOOK_MAX_ATTEMPTS`` attempts, then given up on. Every attempt is kept
(``GET /v1/admin/webhooks``). Events from before webhooks first started are not sent, nor events
older than a day (an endpoint down that long gets what happened since).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol

import httpx

from velocity.clock import Clock
from velocity.domain import (
    DatabaseUnavailable,
    Preview,
    PreviewEvent,
    PreviewState,
    WebhookDelivery,
)
from velocity.domain.webhook_signature import HEADER, sign
from velocity.loops.health import LoopMonitor
from velocity.loops.replica import Replica

log = logging.getLogger(__name__)

KINDS: Mapping[PreviewState, str] = {
    PreviewState.PROVISIONING: "preview.created",
    PreviewState.READY: "preview.ready",  # also on each resume (its detail says so)
    PreviewState.SUSPENDED: "preview.suspended",
    PreviewState.FAILED: "preview.failed",
    PreviewState.STOPPED: "preview.stopped",
}
STARTED = "webhooks.started"  # the log's first entry: events up to its event_id are not sent
IDLE_SECONDS = 1.0  # how often the log is read for new events while nothing is pending
MAX_DELAY_SECONDS = 60.0
SEND_TIMEOUT_SECONDS = 10.0
KEEP_TRYING = timedelta(hours=24)  # an event older than this is not sent any more


class WebhookStore(Protocol):
    async def last_event_id(self) -> int: ...

    async def first_delivered_event_id(self) -> int | None: ...

    async def undelivered_events(
        self, *, after_id: int, since: datetime, states: Any, limit: int = 100
    ) -> list[tuple[int, PreviewEvent]]: ...

    async def record_delivery(self, delivery: WebhookDelivery) -> None: ...

    async def find_preview(self, preview_id: str) -> Preview | None: ...


def payload(event_id: int, event: PreviewEvent, preview: Preview | None) -> dict[str, Any]:
    data: dict[str, Any] = {"id": event.preview_id, "state": event.state.value, "detail": event.detail}
    if preview is not None:
        data |= {
            "user_id": preview.user_id,
            "project_id": preview.project_id,
            "machine_id": preview.machine_id,
            "failure_reason": preview.failure_reason,
        }
    return {
        "id": event_id,
        "type": KINDS[event.state],
        "created_at": event.at.isoformat().replace("+00:00", "Z"),
        "data": {"preview": data},
    }


class Webhooks:
    def __init__(
        self,
        store: WebhookStore,
        clock: Clock,
        *,
        url: str,
        secret: str,
        max_attempts: int,
        retry_seconds: float,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._url = url
        self._secret = secret
        self._max_attempts = max_attempts
        self._retry_seconds = retry_seconds
        self._client = client or httpx.AsyncClient(timeout=SEND_TIMEOUT_SECONDS, follow_redirects=False)
        self._floor: int | None = None  # events up to this id happened before webhooks started

    async def aclose(self) -> None:
        await self._client.aclose()

    async def run(self, replica: Replica, monitor: LoopMonitor) -> None:
        health = monitor.loop("webhooks", IDLE_SECONDS)
        while True:
            if replica.leader:
                try:
                    await self.deliver_pending()
                    health.succeeded(self._clock.now())
                except DatabaseUnavailable as exc:
                    health.failed(exc.message)
                    log.warning("webhooks: the database is unavailable: %s", exc.message)
            else:
                health.standing_by()
            await self._clock.sleep(IDLE_SECONDS if replica.leader else replica.period)

    async def deliver_pending(self) -> int:
        """Send every pending event, in order; how many were finished."""
        if self._floor is None:
            self._floor = await self._start()
        since = self._clock.now() - KEEP_TRYING
        finished = 0
        while True:
            pending = await self._store.undelivered_events(after_id=self._floor, since=since, states=KINDS)
            if not pending:
                return finished
            for event_id, event in pending:
                await self._deliver(event_id, event)
                finished += 1

    async def _start(self) -> int:
        """Where sending starts: where it first started, as the delivery log records it, so that a
        new leader carries on where the last one left off; for the very first leader, now (the
        log then records ``webhooks.started`` at the latest event)."""
        first = await self._store.first_delivered_event_id()
        if first is not None:
            return first - 1
        latest = await self._store.last_event_id()
        started = WebhookDelivery(
            event_id=latest,
            preview_id="",
            kind=STARTED,
            attempt=0,
            at=self._clock.now(),
            delivered=False,
            final=True,
        )
        await self._store.record_delivery(started)
        return latest

    async def _deliver(self, event_id: int, event: PreviewEvent) -> None:
        preview = await self._store.find_preview(event.preview_id)
        body = json.dumps(payload(event_id, event, preview), separators=(",", ":")).encode()
        kind = KINDS[event.state]
        delay = self._retry_seconds
        for attempt in range(1, self._max_attempts + 1):
            status, error = await self._send(body, kind, event_id)
            delivered = status is not None and 200 <= status < 300
            final = delivered or attempt == self._max_attempts
            await self._store.record_delivery(
                WebhookDelivery(
                    event_id=event_id,
                    preview_id=event.preview_id,
                    kind=kind,
                    attempt=attempt,
                    at=self._clock.now(),
                    delivered=delivered,
                    final=final,
                    status_code=status,
                    error=error,
                )
            )
            if delivered:
                return
            if final:
                log.warning(
                    "webhooks: gave up on %s of %s after %d attempts: %s",
                    kind,
                    event.preview_id,
                    attempt,
                    error,
                )
                return
            await self._clock.sleep(delay)
            delay = min(delay * 2, MAX_DELAY_SECONDS)

    async def _send(self, body: bytes, kind: str, event_id: int) -> tuple[int | None, str | None]:
        headers = {
            "content-type": "application/json",
            HEADER: sign(self._secret, body, int(self._clock.now().timestamp())),
            "Velocity-Event": kind,
            "Velocity-Delivery": str(event_id),
            "user-agent": "velocity-webhooks",
        }
        try:
            answer = await self._client.post(self._url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"[:500]
        if 200 <= answer.status_code < 300:
            return answer.status_code, None
        return answer.status_code, f"HTTP {answer.status_code}: {answer.text[:200]}"
