"""The HTTP API as a client sees it: status codes, bodies, and what bad input gets."""

from __future__ import annotations

import asyncio
import io
import tarfile
from urllib.parse import urlsplit

import httpx
import pytest

from tests.api.conftest import Orchestrator
from velocity.auth import Caller, TokenIssuer


def tarball(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


APP = tarball({"package.json": b'{"name": "app"}', "src/main.js": b"console.log(1)"})


async def import_project(o: Orchestrator, project_id: str = "my-app", user: str = "alice") -> None:
    response = await o.client.put(
        f"/v1/projects/{project_id}",
        content=APP,
        headers={**o.auth(user), "content-type": "application/gzip"},
    )
    assert response.status_code == 200, response.text


async def test_health_and_openapi_are_served(orchestrator: Orchestrator) -> None:
    """/healthz says ok and names the provider and this replica; /openapi.json documents the preview
    routes."""
    health = (await orchestrator.client.get("/healthz")).json()
    assert (health["status"], health["version"], health["provider"]) == ("ok", "0.1.0", "fake")
    assert health["instance"] == orchestrator.runtime.monitor.instance
    spec = (await orchestrator.client.get("/openapi.json")).json()
    assert {"/v1/previews", "/v1/previews/{preview_id}", "/v1/previews/{preview_id}/keepalive"} <= set(
        spec["paths"]
    )


async def test_a_preview_is_created_then_returned_again_for_the_same_project(
    orchestrator: Orchestrator,
) -> None:
    """201 with id, state and URL; a second create answers 200 with the same preview."""
    await import_project(orchestrator)
    first = await orchestrator.client.post(
        "/v1/previews", json={"project_id": "my-app"}, headers=orchestrator.auth()
    )
    assert first.status_code == 201
    body = first.json()
    assert body["state"] == "provisioning"
    assert body["url"] == f"http://{body['id']}.preview.localhost:8000/"
    second = await orchestrator.client.post(
        "/v1/previews", json={"project_id": "my-app"}, headers=orchestrator.auth()
    )
    assert second.status_code == 200
    assert second.json()["id"] == body["id"]
    ready = await orchestrator.runtime.previews.settled(body["id"], timeout=5)
    assert ready.state.value == "ready"
    listed = (await orchestrator.client.get("/v1/previews", headers=orchestrator.auth())).json()
    assert [p["id"] for p in listed["previews"]] == [body["id"]]


async def test_keepalive_logs_and_delete(orchestrator: Orchestrator) -> None:
    """Keepalive answers the preview, logs come from the agent, delete stops it for good."""
    await import_project(orchestrator)
    created = (
        await orchestrator.client.post(
            "/v1/previews", json={"project_id": "my-app"}, headers=orchestrator.auth()
        )
    ).json()
    await orchestrator.runtime.previews.settled(created["id"], timeout=5)
    alive = await orchestrator.client.post(
        f"/v1/previews/{created['id']}/keepalive", headers=orchestrator.auth()
    )
    assert alive.status_code == 200
    logs = (
        await orchestrator.client.get(
            f"/v1/previews/{created['id']}/logs?tail=5", headers=orchestrator.auth()
        )
    ).json()
    assert [line["line"] for line in logs["lines"]] == ["vite ready", "GET /"]
    deleted = await orchestrator.client.delete(f"/v1/previews/{created['id']}", headers=orchestrator.auth())
    assert deleted.json()["state"] == "stopped"
    gone = await orchestrator.client.post(
        f"/v1/previews/{created['id']}/keepalive", headers=orchestrator.auth()
    )
    assert gone.status_code == 410


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing bearer token"),
        ({"Authorization": "Bearer not-a-jwt"}, "malformed bearer token"),
        ({"Authorization": "Basic YTpi"}, "missing bearer token"),
    ],
)
async def test_calls_without_a_valid_token_get_401(
    orchestrator: Orchestrator, headers: dict[str, str], message: str
) -> None:
    """No token, a malformed one, or another scheme: 401 naming the problem, nothing created."""
    response = await orchestrator.client.post("/v1/previews", json={"project_id": "my-app"}, headers=headers)
    assert response.status_code == 401
    assert message in response.json()["error"]["message"]
    assert orchestrator.provider.calls == []


async def test_tokens_signed_elsewhere_expired_or_anonymous_are_refused(orchestrator: Orchestrator) -> None:
    """A foreign signature, an expired token and the anon key are all 401."""
    issuer = orchestrator.runtime.issuer
    foreign = TokenIssuer("x" * 40, issuer=issuer.issuer).mint_user("alice")
    expired = issuer.mint_user("alice", ttl_seconds=-120)
    anon = issuer.mint_anon()
    for token in (foreign, expired, anon):
        response = await orchestrator.client.get("/v1/previews", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, token


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, "project_id"),
        ({"project_id": "../etc"}, "project_id"),
        ({"project_id": "UPPER"}, "project_id"),
        ({"project_id": "ok", "extra": 1}, "extra"),
        ([], "request"),
    ],
)
async def test_malformed_create_bodies_get_422_naming_the_field(
    orchestrator: Orchestrator, body: object, fragment: str
) -> None:
    """Bad input is refused with the field named; no row, no machine."""
    response = await orchestrator.client.post("/v1/previews", json=body, headers=orchestrator.auth())
    assert response.status_code == 422
    assert fragment in response.json()["error"]["message"]
    assert orchestrator.provider.calls == []


async def test_unknown_project_is_404_and_creates_nothing(orchestrator: Orchestrator) -> None:
    """Previewing a project that was never imported: 404 that says how to import one."""
    response = await orchestrator.client.post(
        "/v1/previews", json={"project_id": "ghost"}, headers=orchestrator.auth()
    )
    assert response.status_code == 404
    assert "import it first" in response.json()["error"]["message"]
    assert (await orchestrator.client.get("/v1/previews", headers=orchestrator.auth())).json() == {
        "previews": []
    }


async def test_someone_elses_preview_is_404_and_malformed_ids_422(orchestrator: Orchestrator) -> None:
    """Bob cannot read, keep alive or delete Alice's preview; ids that are not ids are 422."""
    await import_project(orchestrator)
    created = (
        await orchestrator.client.post(
            "/v1/previews", json={"project_id": "my-app"}, headers=orchestrator.auth()
        )
    ).json()
    bob = orchestrator.auth("bob")
    for method, path in [
        ("GET", f"/v1/previews/{created['id']}"),
        ("DELETE", f"/v1/previews/{created['id']}"),
        ("POST", f"/v1/previews/{created['id']}/keepalive"),
        ("GET", f"/v1/previews/{created['id']}/logs"),
    ]:
        response = await orchestrator.client.request(method, path, headers=bob)
        assert response.status_code == 404, (method, path)
    # An encoded slash makes a path no route has: 404, still with our error body.
    for bad, status in (("short", 422), ("UPPERCASEID12", 422), ("abc%2F..%2Fxyz", 404)):
        response = await orchestrator.client.get(f"/v1/previews/{bad}", headers=orchestrator.auth())
        assert response.status_code == status, bad
        assert "error" in response.json()
    assert (await orchestrator.runtime.previews.settled(created["id"], timeout=5)).state.value == "ready"


async def test_oversize_bodies_get_413(orchestrator: Orchestrator) -> None:
    """A body over MAX_REQUEST_BODY_BYTES is refused before it reaches a route."""
    response = await orchestrator.client.post(
        "/v1/previews",
        content=b'{"project_id": "' + b"a" * 8000 + b'"}',
        headers={**orchestrator.auth(), "content-type": "application/json"},
    )
    assert response.status_code == 413
    assert orchestrator.provider.calls == []


@pytest.mark.parametrize(
    ("archive", "fragment"),
    [
        (b"not a tarball", "not a readable tar archive"),
        (tarball({"../escape.js": b"x"}), "leaves the project directory"),
        (tarball({"/etc/passwd": b"x"}), "absolute path"),
        (tarball({}), "no files"),
    ],
)
async def test_bad_project_archives_get_422_and_nothing_is_saved(
    orchestrator: Orchestrator, archive: bytes, fragment: str
) -> None:
    """Broken archives and path escapes are refused, naming what was wrong."""
    response = await orchestrator.client.put(
        "/v1/projects/evil",
        content=archive,
        headers={**orchestrator.auth(), "content-type": "application/gzip"},
    )
    assert response.status_code == 422
    assert fragment in response.json()["error"]["message"]
    assert (await orchestrator.client.get("/v1/projects", headers=orchestrator.auth())).json() == {
        "projects": []
    }


async def started_preview(o: Orchestrator, project_id: str, user: str) -> tuple[str, str]:
    """A ready preview's id and the agent token its machine was given."""
    created = await o.client.post("/v1/previews", json={"project_id": project_id}, headers=o.auth(user))
    preview_id = created.json()["id"]
    preview = await o.runtime.previews.settled(preview_id, timeout=5)
    assert preview.machine_id is not None
    return preview_id, o.provider.specs[preview.machine_id].env["AGENT_TOKEN"]


async def test_snapshots_are_for_the_owner_and_the_projects_agents(orchestrator: Orchestrator) -> None:
    """The owner and an agent of the project read the snapshot; another user or agent cannot."""
    await import_project(orchestrator)
    await import_project(orchestrator, "other", user="bob")
    _, own_agent = await started_preview(orchestrator, "my-app", "alice")
    _, other_agent = await started_preview(orchestrator, "other", "bob")
    url = "/v1/projects/my-app/snapshot"
    owner = await orchestrator.client.get(url, headers=orchestrator.auth())
    assert owner.status_code == 200
    assert owner.headers["content-type"] == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(owner.content)) as archive:
        assert sorted(archive.getnames()) == ["package.json", "src/main.js"]
    assert (
        await orchestrator.client.get(url, headers={"Authorization": f"Bearer {own_agent}"})
    ).status_code == 200
    assert (
        await orchestrator.client.get(url, headers={"Authorization": f"Bearer {other_agent}"})
    ).status_code == 403
    assert (await orchestrator.client.get(url, headers=orchestrator.auth("bob"))).status_code == 403
    agent_create = await orchestrator.client.post(
        "/v1/previews", json={"project_id": "my-app"}, headers={"Authorization": f"Bearer {own_agent}"}
    )
    assert agent_create.status_code == 401


async def test_an_agent_token_is_revoked_when_its_preview_ends(orchestrator: Orchestrator) -> None:
    """After the preview is deleted its agent's token reads nothing, not even for the project's next
    preview; that preview's own token does."""
    await import_project(orchestrator)
    first, old_token = await started_preview(orchestrator, "my-app", "alice")
    url = "/v1/projects/my-app/snapshot"
    assert (
        await orchestrator.client.get(url, headers={"Authorization": f"Bearer {old_token}"})
    ).status_code == 200
    deleted = await orchestrator.client.delete(f"/v1/previews/{first}", headers=orchestrator.auth())
    assert deleted.status_code in (200, 202, 204), deleted.text
    _, new_token = await started_preview(orchestrator, "my-app", "alice")
    refused = await orchestrator.client.get(url, headers={"Authorization": f"Bearer {old_token}"})
    assert refused.status_code == 401
    assert "revoked" in refused.text
    assert (
        await orchestrator.client.get(url, headers={"Authorization": f"Bearer {new_token}"})
    ).status_code == 200


async def test_the_router_answers_unknown_and_malformed_preview_hosts_clearly(
    orchestrator: Orchestrator,
) -> None:
    """A preview host that names no preview gets a 404 page; a malformed one a 4xx, never a 500."""
    unknown = await orchestrator.client.get("/", headers={"host": "abcdefabcdef.preview.localhost:8000"})
    assert unknown.status_code == 404
    assert "no preview abcdefabcdef" in unknown.text
    malformed = await orchestrator.client.get("/", headers={"host": "not_an.id.preview.localhost"})
    assert 400 <= malformed.status_code < 500


async def test_too_many_creates_get_429_with_retry_after(orchestrator: Orchestrator) -> None:
    """Past the create rate the API answers 429 with a Retry-After header and creates nothing."""
    await import_project(orchestrator)
    responses = [
        await orchestrator.client.post(
            "/v1/previews", json={"project_id": "my-app"}, headers=orchestrator.auth()
        )
        for _ in range(orchestrator.runtime.settings.preview_create_burst + 1)
    ]
    refused = responses[-1]
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1
    assert {r.json()["id"] for r in responses[:-1]} == {responses[0].json()["id"]}


async def test_of_concurrent_first_imports_of_an_id_exactly_one_owns_it(orchestrator: Orchestrator) -> None:
    """Many users import a new id at once: one gets 200 and owns the project and its snapshot; every
    other gets 403 and changed nothing."""
    users = [f"user-{n}" for n in range(8)]

    async def put(user: str) -> tuple[str, int]:
        archive = tarball({"package.json": b'{"name": "app"}', "owner.txt": user.encode()})
        response = await orchestrator.client.put(
            "/v1/projects/contested",
            content=archive,
            headers={**orchestrator.auth(user), "content-type": "application/gzip"},
        )
        return user, response.status_code

    answers = dict(await asyncio.gather(*(put(user) for user in users)))
    winners = [user for user, code in answers.items() if code == 200]
    assert len(winners) == 1 and sorted(answers.values()) == [200] + [403] * 7, answers
    project = await orchestrator.runtime.store.get_project("contested")
    assert project.owner_id == winners[0]
    snapshot = await orchestrator.runtime.projects.snapshot(Caller(winners[0], "authenticated"), "contested")
    with tarfile.open(fileobj=io.BytesIO(snapshot)) as archive:
        member = archive.extractfile("owner.txt")
        assert member is not None and member.read() == winners[0].encode()


async def test_a_signed_link_signs_in_once(orchestrator: Orchestrator) -> None:
    """The first opening of ``access_url`` sets the session cookie; the same link again is a 401 that
    says how to get a new one, and a fresh link from the API works."""
    await import_project(orchestrator)
    preview_id, _ = await started_preview(orchestrator, "my-app", "alice")

    async def open_link() -> httpx.Response:
        body = (
            await orchestrator.client.get(f"/v1/previews/{preview_id}", headers=orchestrator.auth())
        ).json()
        link = urlsplit(body["access_url"])
        return await orchestrator.client.get(f"{link.path}?{link.query}", headers={"host": link.netloc})

    first = await open_link()
    assert first.status_code == 200 and "set-cookie" in first.headers
    reused = await orchestrator.client.get(
        str(first.request.url), headers={"host": first.request.headers["host"]}
    )
    assert reused.status_code == 401
    assert "used already" in reused.text
    assert (await open_link()).status_code == 200
