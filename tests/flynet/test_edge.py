"""The edge proxy as the topology runs it, against real servers on loopback: it routes only to
machines whose checks pass, holds requests over a service's hard limit, and replays on both of
Fly's replay forms (the header and the JSON body)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.proxy.harness import serve
from velocity.flynet.edge import Edge, EdgeConfig

HOST = "app.example.com"


@dataclass
class Router:
    """The app behind the edge: a check that passes once ``healthy``, a slow route, replays."""

    healthy: bool = True
    checked: int = 0
    in_flight: int = 0
    most: int = 0
    served: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def app(self) -> Starlette:
        async def ok(_: Request) -> Response:
            self.checked += 1
            async with self.changed:
                self.changed.notify_all()
            return Response(status_code=200 if self.healthy else 503)

        async def slow(_: Request) -> Response:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            async with self.changed:
                self.changed.notify_all()
            await self.release.wait()
            self.in_flight -= 1
            self.served += 1
            return Response("done")

        async def header_replay(_: Request) -> Response:
            return Response(headers={"fly-replay": "app=previews;instance=target1;timeout=5s"})

        async def json_replay(_: Request) -> Response:
            body = {
                "app": "previews",
                "instance": "target1",
                "transform": {
                    "delete_headers": ["cookie"],
                    "set_headers": [{"name": "x-secret", "value": "s"}],
                },
            }
            return Response(json.dumps(body), media_type="application/vnd.fly.replay+json", status_code=409)

        return Starlette(
            routes=[
                Route("/ok", ok),
                Route("/slow", slow),
                Route("/header-replay", header_replay),
                Route("/json-replay", json_replay),
            ]
        )


async def echo(request: Request) -> JSONResponse:
    return JSONResponse(dict(request.headers))


@dataclass
class MachinesApi:
    """The Machines API and the topology's directory, as much as the edge asks of them."""

    target_port: int
    state: str = "started"
    calls: list[str] = field(default_factory=list)

    def app(self) -> Starlette:
        async def machine(_: Request) -> JSONResponse:
            service = {"internal_port": self.target_port, "ports": [{"port": 80, "handlers": ["http"]}]}
            return JSONResponse({"id": "target1", "state": self.state, "config": {"services": [service]}})

        async def start(_: Request) -> JSONResponse:
            self.calls.append("start")
            self.state = "started"
            return JSONResponse({"ok": True})

        async def wait(request: Request) -> JSONResponse:
            self.calls.append(f"wait {request.query_params['state']}")
            return JSONResponse({"ok": True})

        async def where(_: Request) -> JSONResponse:
            return JSONResponse({"proxy_address": "127.0.0.1"})

        machine_path = "/v1/apps/previews/machines/target1"
        return Starlette(
            routes=[
                Route(machine_path, machine),
                Route(f"{machine_path}/start", start, methods=["POST"]),
                Route(f"{machine_path}/wait", wait),
                Route("/_flynet/machines/target1", where),
            ]
        )


@dataclass
class Running:
    edge: Edge
    router: Router
    api: MachinesApi
    client: httpx.AsyncClient


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    router = Router(healthy=False)
    async with (
        serve(router.app()) as router_url,
        serve(Starlette(routes=[Route("/{path:path}", echo)])) as target_url,
    ):
        api = MachinesApi(int(target_url.rsplit(":", 1)[1]))
        async with serve(api.app()) as api_url:
            service: dict[str, Any] = {
                "internal_port": int(router_url.rsplit(":", 1)[1]),
                "ports": [{"port": 80, "handlers": ["http"]}],
                "concurrency": {"type": "requests", "soft_limit": 1, "hard_limit": 2},
                "checks": [{"type": "http", "path": "/ok", "interval": "15s", "timeout": "2s"}],
            }
            config = EdgeConfig(
                apps={
                    "router": {
                        "hosts": [HOST],
                        "machines": [{"id": "router1", "address": "127.0.0.1"}],
                        "services": [service],
                    }
                },
                machines_api=api_url,
                token="t",
                directory="/_flynet/machines",
            )
            edge = Edge(config)
            await edge.start()
            try:
                async with (
                    serve(edge) as edge_url,
                    httpx.AsyncClient(base_url=edge_url, headers={"host": HOST}, timeout=30) as client,
                ):
                    yield Running(edge, router, api, client)
            finally:
                await edge.aclose()


async def test_no_request_reaches_a_machine_before_its_checks_pass(running: Running) -> None:
    pending = asyncio.create_task(running.client.get("/slow"))
    running.router.release.set()
    # The request is at the edge, and the check has failed twice since: the app has seen nothing.
    async with asyncio.timeout(15):
        while running.edge.requests < 1:  # noqa: ASYNC110 - the edge counts as requests arrive
            await asyncio.sleep(0.01)
    failed = running.router.checked
    async with asyncio.timeout(15), running.router.changed:
        await running.router.changed.wait_for(lambda: running.router.checked >= failed + 2)
    assert running.router.served == 0 and not pending.done()
    running.router.healthy = True
    answer = await pending
    assert answer.status_code == 200 and answer.text == "done"
    assert running.router.served == 1


async def test_requests_over_the_hard_limit_wait_for_a_slot(running: Running) -> None:
    running.router.healthy = True
    requests = [asyncio.create_task(running.client.get("/slow")) for _ in range(5)]
    async with asyncio.timeout(15), running.router.changed:
        await running.router.changed.wait_for(lambda: running.router.in_flight == 2)
    async with asyncio.timeout(15):
        while running.edge.requests < 5:  # noqa: ASYNC110 - the edge counts as requests arrive
            await asyncio.sleep(0.01)
    assert running.router.in_flight == 2, "three wait at the edge"
    running.router.release.set()
    answers = await asyncio.gather(*requests)
    assert [a.status_code for a in answers] == [200] * 5
    assert running.router.most == 2


@pytest.mark.parametrize("path", ["/header-replay", "/json-replay"])
async def test_a_replay_in_either_form_goes_to_the_machine_it_names(running: Running, path: str) -> None:
    running.router.healthy = True
    answer = await running.client.get(path, headers={"cookie": "a=b"})
    assert answer.status_code == 200, answer.text
    seen = answer.json()
    assert seen["fly-replay-src"].startswith("instance=router1;")
    assert seen["host"] == HOST
    if path == "/json-replay":
        assert "cookie" not in seen and seen["x-secret"] == "s", "the transform applies"
    else:
        assert seen["cookie"] == "a=b", "the header form replays the request as it came"


async def test_a_replay_to_a_suspended_machine_starts_it_first(running: Running) -> None:
    """Fly's proxy starts a stopped or suspended machine a replay names, then sends the request."""
    running.router.healthy = True
    running.api.state = "suspended"
    answer = await running.client.get("/header-replay")
    assert answer.status_code == 200, answer.text
    assert running.api.calls == ["start", "wait started"]
