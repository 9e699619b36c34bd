"""A preview's network, tried from inside real sandboxes: its own loopback, the egress proxy as the only
way out, and only to the allowlist. Every attack here is a row of docs/security.md's table.

Traffic goes only to loopback addresses (test servers on 127.0.0.1-3, an abstract unix socket, a UDP
socket) and to 169.254.169.254, which a sandbox must not be able to route to at all: each test first
checks that the sandbox has a network namespace of its own with loopback only, before any attack.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import EXAMPLE, PROJECTS, Live, live_orchestrator, modules_cache
from velocity.providers.local.provider import agent_socket

pytestmark = pytest.mark.e2e

NETPROBE = PROJECTS / "netprobe"
ORCHESTRATOR = "orchestrator.velocity.internal"


@dataclass
class Server:
    """An HTTP server on a loopback address of the host that answers ``hello from <host>`` and closes."""

    host: str
    port: int = 0
    connections: int = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await reader.readuntil(b"\r\n\r\n")
            body = f"hello from {self.host}".encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def loopback_servers(*hosts: str) -> AsyncIterator[list[Server]]:
    servers = [Server(host) for host in hosts]
    running = []
    for server in servers:
        listening = await asyncio.start_server(server.serve, server.host, 0)
        server.port = listening.sockets[0].getsockname()[1]
        running.append(listening)
    try:
        yield servers
    finally:
        for listening in running:
            listening.close()
            await listening.wait_closed()


async def started(live: Live, project_id: str) -> dict[str, Any]:
    return await live.started(NETPROBE, project_id)


async def isolated(live: Live, preview_id: str) -> dict[str, Any]:
    """The guard before any attack: a network namespace of the sandbox's own, with loopback only."""
    me = await live.ask(preview_id, "/whoami")
    assert me["netns"] != os.readlink("/proc/self/ns/net"), "the sandbox shares the host's network"
    assert me["interfaces"] == ["lo"]
    assert me["proxy"] == "http://127.0.0.1:3128"
    return me


def refused_by_proxy(result: dict[str, Any], *needles: str) -> bool:
    return result.get("status") == 403 and all(n in result.get("body", "") for n in needles)


async def test_from_a_sandbox_only_its_loopback_and_allowlisted_hosts_answer(
    npm_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The orchestrator's port, the host's other ports, a host off the allowlist, the metadata address,
    a listed name that resolves to loopback, abstract unix sockets and UDP of the host: all refused;
    an allowlisted host answers plain HTTP and CONNECT; the agent fetched its snapshot via the proxy."""
    caplog.set_level(logging.INFO, logger="velocity.egress")
    abstract_name = f"velocity-netprobe-{secrets.token_hex(4)}"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket(socket.AF_UNIX) as abstract:
        udp.bind(("127.0.0.1", 0))
        abstract.bind("\0" + abstract_name)
        abstract.listen()
        await attack_from_a_sandbox(npm_cache, udp, abstract_name, caplog)


async def attack_from_a_sandbox(
    npm_cache: Path, udp: socket.socket, abstract_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with loopback_servers("127.0.0.1", "127.0.0.2", "127.0.0.3") as (host_port, listed, unlisted):
        allowlist = [f"127.0.0.2:{listed.port}", f"localhost:{host_port.port}"]
        async with live_orchestrator(npm_cache=npm_cache, preview_egress_allowlist=allowlist) as live:
            ready = await started(live, "netprobe")
            pid, api = ready["id"], live.port
            await isolated(live, pid)

            # Direct connections: nothing but the sandbox's own loopback exists.
            for host, port in [("127.0.0.1", api), ("127.0.0.1", host_port.port), ("127.0.0.2", listed.port),
                               ("127.0.0.3", unlisted.port)]:  # fmt: skip
                assert (await live.ask(pid, "/tcp", host=host, port=port))["error"] == "ECONNREFUSED", host
            assert (await live.ask(pid, "/tcp", host="169.254.169.254", port=80))["error"] == "ENETUNREACH"
            assert (await live.ask(pid, "/unix", path="@" + abstract_name))["error"] == "ECONNREFUSED"
            assert (await live.ask(pid, "/udp", host="127.0.0.1", port=udp.getsockname()[1]))["ok"]

            # Through the egress proxy: refused with a reason, nothing dialled.
            api_url = f"http://127.0.0.1:{api}/v1/previews"
            assert refused_by_proxy(
                await live.ask(pid, "/proxy-http", url=api_url), f"127.0.0.1:{api} is not on"
            )
            assert refused_by_proxy(await live.ask(pid, "/proxy-connect", host="127.0.0.1", port=api))
            internal_api = f"http://{ORCHESTRATOR}/v1/previews"
            assert refused_by_proxy(
                await live.ask(pid, "/proxy-http", url=internal_api), "not open to previews"
            )
            other_snapshot = f"http://{ORCHESTRATOR}/v1/projects/someone-elses/snapshot"
            assert refused_by_proxy(
                await live.ask(pid, "/proxy-http", url=other_snapshot), "not open to previews"
            )
            metadata = "http://169.254.169.254/latest/meta-data/"
            assert refused_by_proxy(
                await live.ask(pid, "/proxy-http", url=metadata),
                "169.254.169.254:80",
                "PREVIEW_EGRESS_ALLOWLIST",
            )
            assert refused_by_proxy(await live.ask(pid, "/proxy-connect", host="169.254.169.254", port=80))
            unlisted_url = f"http://127.0.0.3:{unlisted.port}/"
            assert refused_by_proxy(
                await live.ask(pid, "/proxy-http", url=unlisted_url),
                f"127.0.0.3:{unlisted.port} is not on the egress allowlist",
                "PREVIEW_EGRESS_ALLOWLIST",
            )
            assert refused_by_proxy(
                await live.ask(pid, "/proxy-connect", host="localhost", port=host_port.port),
                "localhost resolves to 127.0.0.1, a loopback address",
            )

            # The allowlist and the preview's own snapshot pass.
            plain = await live.ask(pid, "/proxy-http", url=f"http://127.0.0.2:{listed.port}/")
            assert (plain["status"], plain["body"]) == (200, "hello from 127.0.0.2")
            tunnel = await live.ask(pid, "/proxy-connect", host="127.0.0.2", port=listed.port)
            assert tunnel["status"] == 200 and tunnel["inner"].endswith("hello from 127.0.0.2")
            own = await live.ask(
                pid, "/proxy-http", url=f"http://{ORCHESTRATOR}/v1/projects/netprobe/snapshot"
            )
            assert own["status"] == 401, "past the proxy; the orchestrator wants the agent's token"

    # The UDP datagram never arrived: a marker sent now is the first thing the socket holds.
    udp.sendto(b"marker", udp.getsockname())
    assert udp.recv(100) == b"marker"
    assert (host_port.connections, listed.connections, unlisted.connections) == (0, 2, 0)
    allowed = [r.getMessage() for r in caplog.records if " allowed: " in r.getMessage()]
    assert any(f"GET http://{ORCHESTRATOR}:80/v1/projects/netprobe/snapshot" in m for m in allowed), allowed


async def test_a_preview_cannot_reach_another_preview(npm_cache: Path) -> None:
    """Two sandboxes, each with its own loopback: the other's dev server, agent socket, snapshot and
    preview URL are out of reach, and both dev servers use the same port without colliding."""
    async with live_orchestrator(npm_cache=npm_cache) as live:
        a, b = await asyncio.gather(started(live, "probe-a"), started(live, "probe-b"))
        me, other = await isolated(live, a["id"]), await isolated(live, b["id"])
        assert me["netns"] != other["netns"]

        # Port 5173 in a's namespace is a's own dev server, never b's.
        seen = await live.ask(a["id"], "/http", host="127.0.0.1", port=5173, path="/whoami")
        assert '"project":"probe-a"' in seen["body"]
        b_socket = agent_socket(live.settings.data_dir / "sandboxes" / b["machine_id"])
        assert b_socket.exists()
        assert (await live.ask(a["id"], "/unix", path=str(b_socket)))["error"] == "ENOENT"
        b_snapshot = f"http://{ORCHESTRATOR}/v1/projects/probe-b/snapshot"
        assert refused_by_proxy(
            await live.ask(a["id"], "/proxy-http", url=b_snapshot), "not open to previews"
        )
        b_url = f"http://{b['id']}.{live.settings.preview_domain}:{live.port}/whoami"
        assert refused_by_proxy(
            await live.ask(a["id"], "/proxy-http", url=b_url), "is not on the egress allowlist"
        )
        assert refused_by_proxy(await live.ask(a["id"], "/proxy-http", url="http://127.0.0.1:5173/whoami"))


async def test_npm_ci_of_the_example_installs_through_the_egress_proxy(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """From an empty npm cache, the example's install reaches the registry only through the proxy."""
    caplog.set_level(logging.INFO, logger="velocity.egress")
    empty = Path(tempfile.mkdtemp(prefix="vp-npm-"))
    try:
        async with live_orchestrator(npm_cache=empty) as live:
            await live.import_project(EXAMPLE, "example")
            ready = await live.settled((await live.create("example"))["id"], timeout=180)
            assert ready["state"] == "ready", ready["failure_reason"]
            assert "Hello from Velocity" in (await live.fetch(ready["id"], "/src/App.jsx")).text
    finally:
        shutil.rmtree(empty, ignore_errors=True)
        shutil.rmtree(modules_cache(empty), ignore_errors=True)
    tunnels = [r.getMessage() for r in caplog.records if "allowed: CONNECT " in r.getMessage()]
    assert tunnels, "npm fetched nothing through the proxy"
    assert all(":443" in m for m in tunnels)


async def test_an_adopted_sandbox_gets_its_way_out_back_after_a_restart(npm_cache: Path) -> None:
    """The egress listener lives in the orchestrator: the next one opens it again for the same preview."""
    data = Path(tempfile.mkdtemp(prefix="vp-"))
    try:
        async with loopback_servers("127.0.0.2") as (listed,):
            overrides = {"preview_egress_allowlist": [f"127.0.0.2:{listed.port}"]}
            async with live_orchestrator(
                npm_cache=npm_cache, data=data, keep_previews=True, **overrides
            ) as first:
                ready = await started(first, "netprobe")
            async with live_orchestrator(npm_cache=npm_cache, data=data, **overrides) as second:
                await second.running.runtime.previews.reconcile()
                await isolated(second, ready["id"])
                again = await second.ask(ready["id"], "/proxy-http", url=f"http://127.0.0.2:{listed.port}/")
                assert (again["status"], again["body"]) == (200, "hello from 127.0.0.2")
    finally:
        shutil.rmtree(data, ignore_errors=True)
