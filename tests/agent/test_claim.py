"""A pooled agent: it boots the pool's template and waits; one claim makes it a preview's, once."""

from __future__ import annotations

import contextlib
import json

from tests.agent.harness import Agent, AgentFactory, SnapshotServer, project_files, tarball

POOL_SECRET = "pool-origin-secret"
PREVIEW_SECRET = "preview-origin-secret"
PROJECT = "proj-claimed"
PROJECT_TOKEN = "preview-agent-token"


def claim_body(**changes: str) -> bytes:
    body = {
        "preview_id": "pv-claimed",
        "project_id": PROJECT,
        "token": PROJECT_TOKEN,
        "origin_secret": PREVIEW_SECRET,
    }
    body.update(changes)
    return json.dumps(body).encode()


def as_orchestrator(secret: str) -> dict[str, str]:
    return {"x-velocity-origin": secret}


async def claim(agent: Agent, body: bytes, secret: str = POOL_SECRET) -> tuple[int, dict[str, object]]:
    response = await agent.client.post("/__velocity/claim", content=body, headers=as_orchestrator(secret))
    answer: dict[str, object] = response.json()
    return response.status_code, answer


def serve_project(snapshots: SnapshotServer, files: dict[str, bytes]) -> None:
    snapshots.routes[f"/v1/projects/{PROJECT}/snapshot"] = (PROJECT_TOKEN, tarball(files))


def pooled(
    start_agent: AgentFactory, snapshots: SnapshotServer
) -> contextlib.AbstractAsyncContextManager[Agent]:
    snapshots.body = tarball(project_files(**{"message.txt": b"template\n", "template-only.txt": b"x"}))
    return start_agent(AGENT_POOLED="1", AGENT_ORIGIN_SECRET=POOL_SECRET)


async def test_a_claim_swaps_the_project_in_and_keeps_the_dev_server(
    start_agent: AgentFactory, snapshots: SnapshotServer
) -> None:
    serve_project(snapshots, project_files(**{"message.txt": b"the user's project\n"}))
    async with pooled(start_agent, snapshots) as agent:
        body = await agent.ready()
        assert body["pooled"] is True
        before = await agent.client.get("/pid", headers=as_orchestrator(POOL_SECRET))
        assert (await agent.client.get("/message", headers=as_orchestrator(POOL_SECRET))).text == "template\n"

        status, answer = await claim(agent, claim_body())
        assert (status, answer) == (
            200,
            {"state": "ready", "dependencies_changed": False, "restarted": False},
        )

        health = (await agent.health()).json()
        assert (health["pooled"], health["project_id"], health["state"]) == (False, PROJECT, "ready")
        page = await agent.client.get("/message", headers=as_orchestrator(PREVIEW_SECRET))
        assert page.text == "the user's project\n"
        after = await agent.client.get("/pid", headers=as_orchestrator(PREVIEW_SECRET))
        assert after.text == before.text  # the same dev server, still running
        assert not (agent.workspace / "template-only.txt").exists()
        # The project's snapshot was fetched with the preview's token, from the template's server.
        assert snapshots.paths[-1] == f"/v1/projects/{PROJECT}/snapshot"
        assert snapshots.authorizations[-1] == f"Bearer {PROJECT_TOKEN}"


async def test_after_a_claim_only_the_preview_s_secret_opens_the_agent_and_no_claim_is_taken_again(
    start_agent: AgentFactory, snapshots: SnapshotServer
) -> None:
    serve_project(snapshots, project_files())
    async with pooled(start_agent, snapshots) as agent:
        await agent.ready()
        assert (await claim(agent, claim_body()))[0] == 200
        refused = await agent.client.get("/pid", headers=as_orchestrator(POOL_SECRET))
        assert refused.status_code == 403
        status, answer = await claim(agent, claim_body(preview_id="pv-other"), secret=PREVIEW_SECRET)
        assert status == 409
        assert "claimed already" in str(answer["message"])
        assert (await claim(agent, claim_body(), secret=POOL_SECRET))[0] == 403


async def test_a_project_with_other_dependencies_installs_and_restarts_the_dev_server(
    start_agent: AgentFactory, snapshots: SnapshotServer
) -> None:
    package = json.loads(project_files()["package.json"])
    package["description"] = "not the template"
    serve_project(snapshots, project_files(**{"package.json": json.dumps(package).encode()}))
    async with pooled(start_agent, snapshots) as agent:
        await agent.ready()
        before = (await agent.health()).json()["dev_server"]["pid"]
        status, answer = await claim(agent, claim_body())
        assert (status, answer["dependencies_changed"]) == (200, True)
        assert answer["state"] != "ready"  # not until the dev server has started again
        ready = await agent.client.get(
            "/health?wait=ready&timeout=60", headers=as_orchestrator(PREVIEW_SECRET)
        )
        assert ready.json()["state"] == "ready"
        assert ready.json()["dev_server"]["pid"] != before


async def test_a_malformed_claim_is_refused_and_the_machine_stays_pooled(
    start_agent: AgentFactory, snapshots: SnapshotServer
) -> None:
    async with pooled(start_agent, snapshots) as agent:
        await agent.ready()
        status, answer = await claim(agent, b'{"preview_id": "pv-1"}')
        assert status == 422
        assert "project_id, token, origin_secret" in str(answer["message"])
        assert (await claim(agent, b"[1, 2]"))[0] == 422
        assert (await claim(agent, claim_body(), secret="a guess"))[0] == 403
        assert (await agent.health()).json()["pooled"] is True


async def test_an_agent_that_is_not_pooled_takes_no_claim(agent: Agent) -> None:
    status, answer = await claim(agent, claim_body())
    assert status == 403
    assert "not pooled" in str(answer["message"])


async def test_pooling_needs_the_template_s_url(start_agent: AgentFactory) -> None:
    async with start_agent(AGENT_POOLED="1", SNAPSHOT_URL=None) as agent:
        assert await agent.exit_code() != 0
    assert "AGENT_POOLED=1 needs SNAPSHOT_URL" in agent.stderr.decode()


async def test_unchanged_files_are_left_alone_and_a_changed_dev_server_config_restarts_it(
    start_agent: AgentFactory, snapshots: SnapshotServer
) -> None:
    """Vite restarts itself, answering nothing meanwhile, when its config is rewritten: the swap
    writes only what differs, and restarts the dev server itself (requests wait) for a new config."""
    serve_project(snapshots, project_files(**{"message.txt": b"template\n", "vite.config.js": b"// mine\n"}))
    async with pooled(start_agent, snapshots) as agent:
        await agent.ready()
        untouched = (agent.workspace / "server.js").stat().st_mtime_ns
        before = (await agent.health()).json()["dev_server"]["pid"]
        status, answer = await claim(agent, claim_body())
        assert (status, answer["dependencies_changed"], answer["restarted"]) == (200, False, True)
        ready = await agent.client.get(
            "/health?wait=ready&timeout=60", headers=as_orchestrator(PREVIEW_SECRET)
        )
        assert ready.json()["dev_server"]["pid"] != before
        assert (agent.workspace / "server.js").stat().st_mtime_ns == untouched
