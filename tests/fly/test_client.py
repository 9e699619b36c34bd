"""The Fly client's calls, against the emulator (spec-checked) and, for timing, a scripted transport."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.fly.support import APP, InstantClock
from velocity.domain import Conflict, NotFound, Unavailable
from velocity.emulator import FlyEmulator
from velocity.fly import FlyClient, authorization_header
from velocity.providers.base import META_CREATE_TAG
from velocity.settings import Settings

Handler = Callable[[httpx.Request], httpx.Response]
IMAGE = "ghcr.io/velocity/preview-container:1.0.0"


@pytest.mark.parametrize(
    ("token", "header"),
    [
        ("abc123", "Bearer abc123"),
        ("fm2_lJPECAAAA", "FlyV1 fm2_lJPECAAAA"),
        ("fm1r_xyz,fm1a_abc", "FlyV1 fm1r_xyz,fm1a_abc"),
        ("FlyV1 fm2_x", "FlyV1 fm2_x"),
        ("Bearer already", "Bearer already"),
        ("  padded\n", "Bearer padded"),
    ],
)
def test_tokens_are_sent_as_bearer_or_flyv1_by_their_form(token: str, header: str) -> None:
    """Macaroons go as ``FlyV1``, everything else as ``Bearer``, as fly-go does."""
    assert authorization_header(token) == header


async def test_create_tags_the_machine_and_answers_with_it(client: FlyClient) -> None:
    """A create carries a unique tag in its metadata, kept when the caller gave one."""
    made = await client.create_machine({"config": {"image": IMAGE}, "region": "ord"})
    assert made["state"] == "created"
    assert len(made["config"]["metadata"][META_CREATE_TAG]) == 32
    given = await client.create_machine({"config": {"image": IMAGE, "metadata": {META_CREATE_TAG: "mine"}}})
    assert given["config"]["metadata"][META_CREATE_TAG] == "mine"


async def test_wait_follows_a_machine_through_its_life(client: FlyClient) -> None:
    """started, stopped, destroyed; waiting for destroyed after it is gone still succeeds."""
    made = await client.create_machine({"config": {"image": IMAGE}})
    assert (await client.wait_machine(made["id"], states=["started"], timeout=5))["state"] == "started"
    await client.stop_machine(made["id"], signal="SIGTERM", kill_timeout=2)
    assert (await client.wait_machine(made["id"], states=["stopped"], timeout=5))["state"] == "stopped"
    await client.destroy_machine(made["id"])
    assert (await client.wait_machine(made["id"], states=["destroyed"], timeout=5))["state"] == "destroyed"
    with pytest.raises(NotFound):
        await client.get_machine(made["id"])


async def test_wait_loops_in_slices_of_at_most_60_seconds_inside_the_deadline(
    mock_client: Callable[[Handler], FlyClient], clock: InstantClock
) -> None:
    """A 150 s wait is 60 + 60 + 30; each 408 is a slice that ran out, not a failure."""
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.params["timeout"])
        clock.advance(float(request.url.params["timeout"]))
        if len(asked) < 3:
            return httpx.Response(408, json={"error": "deadline_exceeded"})
        return httpx.Response(200, json={"ok": True, "state": "started"})

    answer = await mock_client(handler).wait_machine("m", states=["started"], timeout=150)
    assert answer["state"] == "started"
    assert asked == ["60", "60", "30"]


async def test_wait_gives_up_at_the_deadline_with_a_transient_error(
    mock_client: Callable[[Handler], FlyClient], clock: InstantClock
) -> None:
    """``Unavailable`` once the overall deadline passes."""

    def handler(request: httpx.Request) -> httpx.Response:
        clock.advance(float(request.url.params["timeout"]))
        return httpx.Response(408, json={"error": "deadline_exceeded"})

    with pytest.raises(Unavailable, match="did not reach started"):
        await mock_client(handler).wait_machine("m", timeout=90)


async def test_wait_sends_states_repeated_and_ties_itself_to_a_version(
    mock_client: Callable[[Handler], FlyClient],
) -> None:
    """``state`` is repeated like fly-go sends it; ``version`` and ``from_event_id`` pass through."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True, "state": "stopped"})

    await mock_client(handler).wait_machine(
        "m", states=["stopped", "failed"], version="v1", from_event_id="e1"
    )
    params = seen[0].url.params
    assert params.get_list("state") == ["stopped", "failed"]
    assert (params["version"], params["from_event_id"]) == ("v1", "e1")


async def test_a_404_while_waiting_for_destroyed_means_it_is_done(
    mock_client: Callable[[Handler], FlyClient],
) -> None:
    """A machine already purged is as destroyed as it gets."""
    client = mock_client(lambda r: httpx.Response(404, json={"error": "machine not found"}))
    assert (await client.wait_machine("m", states=["destroyed"]))["state"] == "destroyed"
    with pytest.raises(NotFound):
        await client.wait_machine("m", states=["started"])


async def test_list_filters_by_metadata_and_follows_pages(client: FlyClient) -> None:
    """Metadata filters reach Fly as ``metadata.k=v``; with a page size, every page is read."""
    for project in ("a", "a", "a", "b"):
        await client.create_machine({"config": {"image": IMAGE, "metadata": {"project_id": project}}})
    assert len(await client.list_machines(metadata={"project_id": "a"}, page_size=2)) == 3
    assert len(await client.list_machines(metadata={"project_id": "b"})) == 1
    assert "config" not in (await client.list_machines(summary=True))[0]


async def test_leases_guard_a_machine_and_conflicts_are_errors(client: FlyClient) -> None:
    """A held lease makes another acquire a ``Conflict``; its nonce extends it, lets its holder act and release."""
    made = await client.create_machine({"config": {"image": IMAGE}})
    lease = await client.acquire_lease(made["id"], ttl=60, description="deploy")
    with pytest.raises(Conflict, match="lease currently held by"):
        await client.acquire_lease(made["id"], ttl=60)
    refreshed = await client.acquire_lease(made["id"], ttl=600, nonce=lease["nonce"])
    assert refreshed["nonce"] == lease["nonce"]
    assert refreshed["expires_at"] > lease["expires_at"]
    await client.wait_machine(made["id"], timeout=5)
    await client.stop_machine(made["id"], nonce=lease["nonce"])
    await client.release_lease(made["id"], lease["nonce"])
    await client.acquire_lease(made["id"], ttl=60)


async def test_metadata_is_read_set_and_deleted(client: FlyClient) -> None:
    """One key at a time, as the reconciler marks machines."""
    made = await client.create_machine({"config": {"image": IMAGE}})
    await client.set_metadata(made["id"], "velocity_instance", "i-1")
    assert (await client.get_metadata(made["id"]))["velocity_instance"] == "i-1"
    await client.delete_metadata(made["id"], "velocity_instance")
    assert "velocity_instance" not in await client.get_metadata(made["id"])


async def test_apps_and_the_token_are_read(client: FlyClient) -> None:
    """The doctor's calls: the app, the token's organizations; creating a taken name is a Conflict."""
    assert (await client.get_app())["name"] == APP
    assert (await client.current_token())["tokens"][0]["apps"] == [APP]
    assert (await client.create_app({"name": "another", "org_slug": "personal"}))["id"]
    with pytest.raises(Conflict):
        await client.create_app({"name": APP, "org_slug": "personal"})


async def test_ids_are_escaped_in_paths(mock_client: Callable[[Handler], FlyClient]) -> None:
    """An id with a slash cannot reach another endpoint."""
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.raw_path.decode())
        return httpx.Response(200, json={})

    await mock_client(handler).get_machine("../../apps")
    assert paths == [f"/v1/apps/{APP}/machines/..%2F..%2Fapps"]


async def test_the_emulator_counts_calls_by_action(emulator: FlyEmulator, client: FlyClient) -> None:
    """The benchmark's meter: one create, one wait, one destroy."""
    made = await client.create_machine({"config": {"image": IMAGE}})
    await client.wait_machine(made["id"], timeout=5)
    await client.destroy_machine(made["id"], force=True)
    assert dict(emulator.stats.calls) == {"create": 1, "wait": 1, "destroy": 1}


async def test_long_waits_never_hold_the_connections_other_calls_need(tmp_path: Path) -> None:
    """One ``wait`` per watched machine, each held up to 60 s: with 110 of them open (past httpx's
    default pool of 100), a ``get`` still goes through at once, over a pool of its own."""
    release, all_waiting = asyncio.Event(), asyncio.Event()
    waiting = 0

    async def wait(request: Request) -> JSONResponse:
        nonlocal waiting
        waiting += 1
        if waiting == 110:
            all_waiting.set()
        await release.wait()
        return JSONResponse({"ok": True, "state": "started"})

    async def get(request: Request) -> JSONResponse:
        return JSONResponse({"id": request.path_params["machine"], "state": "started"})

    app = Starlette(
        routes=[
            Route("/v1/apps/{app}/machines/{machine}/wait", wait),
            Route("/v1/apps/{app}/machines/{machine}", get),
        ]
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    settings = Settings(
        velocity_data_dir=tmp_path,
        fly_api_base_url=f"http://127.0.0.1:{sock.getsockname()[1]}",
        fly_api_token="t",
        _env_file=None,  # type: ignore[call-arg]
    )
    client = FlyClient.from_settings(settings)
    waits = [asyncio.create_task(client.wait_machine(f"m{n:03d}", timeout=60)) for n in range(110)]
    try:
        await asyncio.wait_for(all_waiting.wait(), timeout=20)
        machine = await asyncio.wait_for(client.get_machine("m999"), timeout=5)
        assert machine["id"] == "m999"
    finally:
        release.set()
        await asyncio.gather(*waits, return_exceptions=True)
        await client.aclose()
        server.should_exit = True
        await serving
