"""On Fly the router answers preview requests with ``fly-replay`` instead of carrying them itself."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Message

from tests.api.conftest import in_process
from velocity.providers.fake import FakeProvider
from velocity.runtime import Runtime
from velocity.settings import Settings

PREVIEW_APP = "velocity-preview-containers"
ORCHESTRATOR_MACHINE = "3d8d9e1b2c4e58"


@dataclass
class OnFly:
    """An orchestrator that believes it runs on a Fly machine, with in-memory machines behind it."""

    runtime: Runtime
    app: ASGIApp
    client: httpx.AsyncClient
    provider: FakeProvider

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.runtime.issuer.mint_user('alice')}"}

    async def ready_preview(self) -> dict[str, Any]:
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w:gz") as tar:
            data = b'{"name": "app"}'
            info = tarfile.TarInfo("package.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        headers = {**self.auth(), "content-type": "application/gzip"}
        imported = await self.client.put("/v1/projects/my-app", content=archive.getvalue(), headers=headers)
        assert imported.status_code == 200, imported.text
        created = await self.client.post("/v1/previews", json={"project_id": "my-app"}, headers=self.auth())
        preview_id = created.json()["id"]
        await self.runtime.previews.settled(preview_id, timeout=5)
        body: dict[str, Any] = (
            await self.client.get(f"/v1/previews/{preview_id}", headers=self.auth())
        ).json()
        assert body["state"] == "ready", body
        return body


@pytest.fixture
async def on_fly(tmp_path: Path) -> AsyncIterator[OnFly]:
    settings = Settings(
        velocity_data_dir=tmp_path,
        preview_provider="fly",
        # Access to private previews is the gate's business (tests/e2e/test_private_previews.py);
        # here every preview is public so the requests show what replay does.
        preview_access="public",
        velocity_fly_app_name=PREVIEW_APP,
        fly_machine_id=ORCHESTRATOR_MACHINE,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'velocity.db'}",
        fly_agent_route="private-network",
        _env_file=None,  # type: ignore[call-arg]
    )
    async with in_process(settings) as (made, app):
        yield OnFly(made.runtime, app, made.client, made.provider)


def host(preview_id: str) -> dict[str, str]:
    return {"host": f"{preview_id}.preview.localhost:8000"}


def replay_of(response: httpx.Response) -> dict[str, Any]:
    """Fly's JSON replay form (dynamic request routing docs): the content type says it is one."""
    assert response.headers["content-type"] == "application/vnd.fly.replay+json"
    assert "fly-replay" not in response.headers
    replay: dict[str, Any] = response.json()
    return replay


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_ready_preview_is_answered_with_fly_replay_to_its_machine(on_fly: OnFly, method: str) -> None:
    """The answer names the preview app and the machine; no byte goes to the agent, nothing is cached."""
    preview = await on_fly.ready_preview()
    calls_before = list(on_fly.provider.calls)
    response = await on_fly.client.request(
        method, "/src/App.jsx", content=b"x" * 10, headers=host(preview["id"])
    )
    assert response.status_code == 409
    replay = replay_of(response)
    assert (replay["app"], replay["instance"]) == (PREVIEW_APP, preview["machine_id"])
    assert (replay["timeout"], replay["fallback"]) == ("10s", "force_self")
    assert response.headers["cache-control"] == "no-store"
    assert on_fly.provider.calls == calls_before  # the machine id comes from the store, not from Fly


async def test_previews_that_do_not_serve_get_the_same_pages_as_when_proxying(on_fly: OnFly) -> None:
    """Unknown: 404; malformed: 422; deleted: 410; none of them carries fly-replay."""
    preview = await on_fly.ready_preview()
    await on_fly.client.delete(f"/v1/previews/{preview['id']}", headers=on_fly.auth())
    answers = {
        "unknown": await on_fly.client.get("/", headers=host("abcdefabcdef")),
        "malformed": await on_fly.client.get("/", headers=host("not_an_id")),
        "deleted": await on_fly.client.get("/", headers=host(preview["id"])),
    }
    assert {name: r.status_code for name, r in answers.items()} == {
        "unknown": 404,
        "malformed": 422,
        "deleted": 410,
    }
    assert "no preview abcdefabcdef" in answers["unknown"].text
    assert all("replay" not in r.headers["content-type"] for r in answers.values())


async def test_the_api_is_never_replayed(on_fly: OnFly) -> None:
    """Requests to the orchestrator's own host reach the API as before."""
    health = await on_fly.client.get("/healthz")
    assert health.status_code == 200
    assert health.headers["content-type"] == "application/json"


async def test_a_websocket_upgrade_is_answered_with_fly_replay(on_fly: OnFly) -> None:
    """Fly replays the upgrade request itself, so the header goes on an HTTP answer to it."""
    preview = await on_fly.ready_preview()
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "headers": [(b"host", f"{preview['id']}.preview.localhost:8000".encode())],
        "extensions": {"websocket.http.response": {}},
    }
    await on_fly.app(scope, receive, send)
    assert [m["type"] for m in sent] == ["websocket.http.response.start", "websocket.http.response.body"]
    headers = dict(sent[0]["headers"])
    assert headers[b"content-type"] == b"application/vnd.fly.replay+json"
    replay = json.loads(sent[1]["body"])
    assert replay["instance"] == preview["machine_id"]
    secret = on_fly.runtime.issuer.origin_secret(preview["id"])
    assert {"name": "x-velocity-origin", "value": secret} in replay["transform"]["set_headers"]


@pytest.mark.parametrize(
    ("overrides", "replays"),
    [
        ({"preview_provider": "fly", "fly_machine_id": ORCHESTRATOR_MACHINE}, True),
        ({"preview_provider": "fly"}, False),  # a laptop talking to Fly or to the emulator
        (
            {
                "preview_provider": "fly",
                "fly_machine_id": ORCHESTRATOR_MACHINE,
                "fly_agent_route": "emulator",
            },
            False,
        ),
        ({"preview_provider": "local", "fly_machine_id": ORCHESTRATOR_MACHINE}, False),
    ],
)
def test_previews_are_replayed_only_by_a_fly_orchestrator_running_on_fly(
    overrides: dict[str, str], replays: bool
) -> None:
    """FLY_MACHINE_ID (set by Fly) with PREVIEW_PROVIDER=fly and real machines; proxied anywhere else."""
    settings = Settings(
        **{
            "fly_machine_id": None,
            "fly_agent_route": "private-network",
            "velocity_fly_app_name": "velocity-preview-containers",
            "database_url": "postgresql://velocity@db.flycast:5432/velocity",
            **overrides,
        },
        _env_file=None,
    )  # type: ignore[arg-type]
    assert settings.fly_replay is replays


async def test_the_replay_removes_our_credentials_and_adds_the_machine_s_secret(on_fly: OnFly) -> None:
    """Fly replays the original request: the transform deletes the owner's token, sets the cookie
    header without ours, deletes a forged origin header and sets the machine's own secret; the app's
    own token would pass unchanged."""
    preview = await on_fly.ready_preview()
    owner = on_fly.auth()["Authorization"]
    response = await on_fly.client.get(
        "/",
        headers={
            **host(preview["id"]),
            "authorization": owner,
            "cookie": "theme=dark; __Host-velocity_preview=abc",
            "x-velocity-origin": "forged",
        },
    )
    transform = replay_of(response)["transform"]
    secret = on_fly.runtime.issuer.origin_secret(preview["id"])
    assert sorted(transform["delete_headers"]) == ["authorization", "cookie", "x-velocity-origin"]
    assert sorted(transform["set_headers"], key=lambda h: h["name"]) == [
        {"name": "cookie", "value": "theme=dark"},
        {"name": "x-velocity-origin", "value": secret},
    ]
    own = await on_fly.client.get("/", headers={**host(preview["id"]), "authorization": "Bearer app-token"})
    assert replay_of(own)["transform"]["delete_headers"] == []


async def test_a_body_fly_cannot_replay_is_carried_by_the_router(on_fly: OnFly) -> None:
    """Over 1 MB, or of unknown length, a request is not answered with a replay (Fly's proxy would
    refuse it): the router carries it to the machine over the private network itself."""
    preview = await on_fly.ready_preview()

    async def chunks() -> AsyncIterator[bytes]:
        yield b"chunk"

    for body in (b"x" * 1_000_001, chunks()):
        response = await on_fly.client.post("/upload", content=body, headers=host(preview["id"]))
        assert "replay" not in response.headers.get("content-type", "")
        # The in-memory machine has no network: the router's own attempt fails as a 502/503 page.
        assert response.status_code in (502, 503), response.text
    assert on_fly.runtime.settings.fly_replay


async def test_a_failed_replay_is_answered_not_replayed_again(on_fly: OnFly) -> None:
    """With ``fallback: force_self`` Fly hands a replay its target refused back, marked
    ``fly-replay-failed``: the router answers 503 instead of replaying in a loop."""
    preview = await on_fly.ready_preview()
    response = await on_fly.client.get("/", headers={**host(preview["id"]), "fly-replay-failed": "timeout"})
    assert response.status_code == 503
    assert "did not take the request" in response.text
