"""schemathesis against the orchestrator's own ``/openapi.json``: every operation, without a token and
with a user's (an operator's too for the admin routes), valid and invalid input; no 5xx, and every
answer is one the document declares (status, content type, headers, body schema)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.schemas import OpenApiSchema

from tests.api.conftest import Orchestrator
from tests.api.test_previews_api import import_project
from tests.hostile.archives import gzip_bodies

# Project uploads: hostile archives, random tarballs and random bytes (schemathesis has no generator
# of its own for this media type).
schemathesis.openapi.media_type("application/gzip", gzip_bodies())

OPERATIONS = [
    ("GET", "/healthz"),
    ("GET", "/auth/v1/.well-known/jwks.json"),
    ("POST", "/v1/previews"),
    ("GET", "/v1/previews"),
    ("GET", "/v1/previews/{preview_id}"),
    ("DELETE", "/v1/previews/{preview_id}"),
    ("POST", "/v1/previews/{preview_id}/keepalive"),
    ("GET", "/v1/previews/{preview_id}/logs"),
    ("GET", "/v1/previews/{preview_id}/events"),
    ("GET", "/v1/realtime"),
    ("GET", "/v1/admin/previews"),
    ("GET", "/v1/admin/previews/{preview_id}/history"),
    ("POST", "/v1/admin/previews/{preview_id}/extend"),
    ("GET", "/v1/admin/machines"),
    ("POST", "/v1/admin/machines/{machine_id}/destroy"),
    ("GET", "/v1/admin/webhooks"),
    ("GET", "/v1/admin/events"),
    ("POST", "/v1/admin/maintenance"),
    ("GET", "/metrics"),
    ("PUT", "/v1/projects/{project_id}"),
    ("GET", "/v1/projects"),
    ("GET", "/v1/projects/{project_id}/snapshot"),
    ("GET", "/v1/pool/template"),
]
# Nothing of these can be made invalid: negative generation has no input to break.
NO_INPUT = {
    ("GET", "/healthz"),
    ("GET", "/auth/v1/.well-known/jwks.json"),
    ("GET", "/v1/previews"),
    ("GET", "/v1/projects"),
    ("GET", "/v1/realtime"),
    ("GET", "/v1/admin/previews"),
    ("GET", "/v1/admin/machines"),
    ("GET", "/v1/admin/webhooks"),
    ("POST", "/v1/admin/maintenance"),
    ("GET", "/metrics"),
}
# An operator's stream of every preview's changes never ends (tests/e2e/test_dashboard.py reads it):
# only the refusals of everyone else are fuzzed.
ENDLESS_FOR_OPERATORS = {("GET", "/v1/admin/events")}
RUNS = [
    pytest.param(method, path, mode, who, id=f"{method} {path} {mode} {who}")
    for method, path in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    for who in ("anonymous", "user", "operator")
    if mode == GenerationMode.POSITIVE or (method, path) not in NO_INPUT
    if who != "operator" or path.startswith("/v1/admin/") or path == "/metrics"
    if who != "operator" or (method, path) not in ENDLESS_FOR_OPERATORS
]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES = 40


async def test_the_document_lists_every_operation_fuzzed_here(orchestrator: Orchestrator) -> None:
    """A new endpoint fails this test until it is added to OPERATIONS (and so fuzzed)."""
    spec = (await orchestrator.client.get("/openapi.json")).json()
    listed = {(method.upper(), path) for path, item in spec["paths"].items() for method in item}
    assert listed == set(OPERATIONS)


@dataclass
class Target:
    """The orchestrator, its document, and ids of a project and a preview its user owns."""

    orchestrator: Orchestrator
    schema: OpenApiSchema
    known: dict[str, str]
    ended: str  # a preview that has stopped: its event stream ends, where a live one's would not


@pytest.fixture
async def target(orchestrator: Orchestrator) -> Target:
    live = await ready_preview(orchestrator, "demo")
    ended = await ready_preview(orchestrator, "gone")
    deleted = await orchestrator.client.delete(f"/v1/previews/{ended}", headers=orchestrator.auth())
    assert deleted.status_code == 200, deleted.text
    document = (await orchestrator.client.get("/openapi.json")).json()
    known = {"project_id": "demo", "preview_id": live}
    return Target(orchestrator, schemathesis.openapi.from_dict(document), known, ended)


async def ready_preview(o: Orchestrator, project_id: str) -> str:
    """The id of a ready preview of a new project (ready, so no launch is half-way when the test ends)."""
    await import_project(o, project_id)
    created = await o.client.post("/v1/previews", json={"project_id": project_id}, headers=o.auth())
    assert created.status_code == 201, created.text
    preview_id: str = created.json()["id"]
    assert (await o.runtime.previews.settled(preview_id, timeout=10)).state.value == "ready"
    return preview_id


@pytest.mark.parametrize(("method", "path", "mode", "who"), RUNS)
@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_no_input_gets_a_server_error_or_an_undeclared_answer(
    target: Target, method: str, path: str, mode: GenerationMode, who: str, data: st.DataObject
) -> None:
    """Generated requests (some naming a project and a preview that exist) get declared answers, no 5xx."""
    o = target.orchestrator
    operation = target.schema[path][method]
    strategy = operation.as_strategy(generation_mode=mode)
    fixed = {name: value for name, value in target.known.items() if "{" + name + "}" in path}
    if path.endswith("/{preview_id}/events"):
        fixed = {"preview_id": target.ended}
    if fixed:
        strategy = st.one_of(strategy, operation.as_strategy(generation_mode=mode, path_parameters=fixed))
    case = data.draw(strategy)
    # requests prepares the case as schemathesis would send it; httpx carries it to the app in-process.
    prepared = requests.Request(**case.as_transport_kwargs(base_url=str(o.client.base_url))).prepare()
    headers = dict(prepared.headers)
    if who != "anonymous":
        headers["Authorization"] = f"Bearer {o.runtime.issuer.mint_user('alice', operator=who == 'operator')}"
    response = await o.client.request(
        prepared.method or method, prepared.url or "", headers=headers, content=prepared.body
    )
    case.validate_response(response, checks=CHECKS)
