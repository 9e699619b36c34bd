"""/metrics as Prometheus scrapes it: operators only, and each number moves with what happened."""

from __future__ import annotations

import time
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import Orchestrator
from tests.api.test_previews_api import import_project
from velocity.metrics import REGISTRY
from velocity.service.rows import ROW_TTL_SECONDS


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def operator(orchestrator: Orchestrator) -> dict[str, str]:
    return {"Authorization": f"Bearer {orchestrator.runtime.issuer.mint_user('ops', operator=True)}"}


async def test_metrics_are_for_operators(orchestrator: Orchestrator) -> None:
    assert (await orchestrator.client.get("/metrics")).status_code == 401
    assert (await orchestrator.client.get("/metrics", headers=orchestrator.auth())).status_code == 403
    answer = await orchestrator.client.get("/metrics", headers=operator(orchestrator))
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(answer.text)}
    assert {"velocity_previews", "velocity_machines", "velocity_preview_creates"} <= names


async def test_a_preview_s_life_shows_in_the_metrics(orchestrator: Orchestrator) -> None:
    """Create, a second create of the same project, ready, a request through the router, delete:
    the counters move by exactly those, and the gauges say what exists at each scrape."""
    await import_project(orchestrator, "metered")
    created = sample("velocity_preview_creates_total", outcome="created")
    existing = sample("velocity_preview_creates_total", outcome="existing")
    readies = sample("velocity_preview_ready_seconds_count")
    proxied = sample("velocity_router_requests_total", kind="http", outcome="proxied")
    deleted = sample("velocity_preview_ends_total", state="stopped", reason="deleted")

    first = (
        await orchestrator.client.post(
            "/v1/previews", json={"project_id": "metered"}, headers=orchestrator.auth()
        )
    ).json()
    await orchestrator.client.post(
        "/v1/previews", json={"project_id": "metered"}, headers=orchestrator.auth()
    )
    ready = await orchestrator.runtime.previews.settled(first["id"], timeout=5)
    assert ready.state.value == "ready"
    await orchestrator.client.get(
        "/", headers={**orchestrator.auth(), "host": f"{first['id']}.preview.localhost"}
    )

    await orchestrator.client.get("/metrics", headers=operator(orchestrator))
    assert sample("velocity_previews", state="ready") == 1
    assert sample("velocity_machines", provider="fake", region="local", state="started") == 1
    assert sample("velocity_preview_creates_total", outcome="created") == created + 1
    assert sample("velocity_preview_creates_total", outcome="existing") == existing + 1
    assert sample("velocity_preview_ready_seconds_count") == readies + 1
    assert sample("velocity_router_requests_total", kind="http", outcome="proxied") == proxied + 1
    assert sample("velocity_router_bytes_total", direction="from_preview") > 0

    await orchestrator.client.delete(f"/v1/previews/{first['id']}", headers=orchestrator.auth())
    await orchestrator.client.get("/metrics", headers=operator(orchestrator))
    assert sample("velocity_previews", state="ready") == 0
    assert sample("velocity_previews", state="stopped") == 1
    assert sample("velocity_preview_ends_total", state="stopped", reason="deleted") == deleted + 1


async def test_the_router_does_not_read_the_database_on_every_request(
    orchestrator: Orchestrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forty requests to a ready preview (a page's modules) read its row and its project at most
    once a second each (before: three to five reads per request); a change the service makes is
    seen at the next request."""
    await import_project(orchestrator, "busy")
    created = await orchestrator.client.post(
        "/v1/previews", json={"project_id": "busy"}, headers=orchestrator.auth()
    )
    preview = created.json()
    await orchestrator.runtime.previews.settled(preview["id"], timeout=5)
    store = orchestrator.runtime.store
    reads: list[str] = []
    for name in ("find_preview", "get_preview", "get_project"):
        original = getattr(store, name)

        async def counted(*args: object, _original: Any = original, _name: str = name) -> object:
            reads.append(_name)
            return await _original(*args)

        monkeypatch.setattr(store, name, counted)
    host = {**orchestrator.auth(), "host": f"{preview['id']}.preview.localhost"}
    started = time.monotonic()
    answers = [await orchestrator.client.get(f"/src/m{n}.js", headers=host) for n in range(40)]
    seconds = time.monotonic() - started
    # The fake machines have no dev server behind them: each request is routed, admitted and
    # proxied, and the proxy answers 502 for the missing upstream.
    assert {a.status_code for a in answers} == {502}
    assert len(reads) <= 2 * (int(seconds / ROW_TTL_SECONDS) + 1), (reads, seconds)
    await orchestrator.client.delete(f"/v1/previews/{preview['id']}", headers=orchestrator.auth())
    after = await orchestrator.client.get("/", headers=host)
    assert after.status_code == 410, after.text
