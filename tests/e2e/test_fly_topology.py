"""Production on Fly, on one machine: the orchestrator as Fly runs it, in a namespace of its own on an
IPv6-only private network with Fly's resolver; each preview machine a real sandbox on that network,
its agent started as the image's CMD; every request through an edge proxy that routes, checks,
limits and replays as Fly's does (velocity.flynet, docs/fly.md "The topology on one machine").

Everything a client does here goes through the edge only: the API at the orchestrator's public host
name, the previews at their own, as from the internet.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import pytest_asyncio
import websockets

from tests.e2e.fly_client import Client, mint_token
from tests.e2e.harness import EXAMPLE, PROJECTS
from velocity.flynet import fabric as flynet_fabric
from velocity.flynet.topology import ORCHESTRATOR_ID, Topology, topology

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.asyncio(loop_scope="module"),  # one topology for the module's tests
    pytest.mark.skipif(
        (reason := flynet_fabric.available()) is not None, reason=f"no network namespaces: {reason}"
    ),
]

ROOT = Path(__file__).resolve().parents[2]
INTRUDER = PROJECTS / "intruder"
USER = "e2e-user"  # the session's warm npm cache is this user's


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def net(npm_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Topology]:
    async with topology(root=ROOT, data=tmp_path_factory.mktemp("flynet"), npm_cache=npm_cache) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module")
async def owner(net: Topology) -> AsyncIterator[Client]:
    client = Client(net, mint_token(net, USER))
    yield client
    await client.aclose()


async def on_node(net: Topology, node: str, code: str) -> Any:
    """Run Python ``code`` inside ``node``'s namespace (made on the private network if new); what it
    prints, as JSON."""
    if node not in net.fabric.nodes:
        net.fabric.attach(node, private=[f"{flynet_fabric.ORG_PREFIX}:a7b:99:0:{len(net.fabric.nodes)}:2"])
    done = await asyncio.create_subprocess_exec(
        *net.command(node, sys.executable, "-c", code), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await done.communicate()
    assert done.returncode == 0, err.decode()
    return json.loads(out)


PROBE = """
import json, httpx
answers = {}
for name, url in URLS.items():
    try:
        answers[name] = httpx.get(url, timeout=5).status_code
    except httpx.HTTPError as exc:
        answers[name] = type(exc).__name__
print(json.dumps(answers))
"""


async def test_a_preview_through_fly_s_edge_end_to_end(net: Topology, owner: Client) -> None:
    """Create with PREVIEW_PROVIDER=fly, open with the signed link, see the app, get an HMR update over
    the websocket (replayed by the edge), and delete it: the machine goes and the URL answers 410."""
    preview = await owner.started(EXAMPLE, "example")
    assert preview["url"].startswith(f"https://{preview['id']}.{net.preview_domain}/")
    session = await owner.sign_in(preview)
    assert session.startswith("__Host-velocity_preview=")
    page = await owner.get(preview, "/", cookie=session)
    assert page.status_code == 200 and '<div id="root"></div>' in page.text, page.text
    app = await owner.get(preview, "/src/App.jsx", cookie=session)
    assert "Hello from Velocity" in app.text

    client = (await owner.get(preview, "/@vite/client", cookie=session)).text
    token = re.search(r'const wsToken = "([^"]*)"', client)
    assert token is not None
    host = urlsplit(preview["url"]).netloc
    edge = urlsplit(net.edge_url)
    async with websockets.connect(
        f"ws://{host}/?token={token.group(1)}",
        sock=socket.create_connection((edge.hostname, edge.port)),
        additional_headers={"cookie": session},
        subprotocols=["vite-hmr"],  # type: ignore[list-item]
        open_timeout=30,
    ) as hmr:
        assert json.loads(await hmr.recv())["type"] == "connected"
        edited = (EXAMPLE / "src" / "App.jsx").read_text().replace("Hello from Velocity", "Edited on Fly")
        await owner.broadcast("example", {"src/App.jsx": edited.encode()})
        async with asyncio.timeout(30):
            while (message := json.loads(await hmr.recv()))["type"] != "update":
                pass
        assert any(u["path"] == "/src/App.jsx" for u in message["updates"]), message

    deleted = await owner.api.delete(f"/v1/previews/{preview['id']}")
    assert deleted.status_code == 200 and deleted.json()["state"] == "stopped", deleted.text
    assert await owner.machine_gone(preview["machine_id"])
    assert (await owner.get(preview, "/", cookie=session)).status_code == 410


async def test_user_code_sees_neither_our_cookie_nor_the_owner_s_token(net: Topology, owner: Client) -> None:
    """Fly replays the original request; the router's replay transform removes our session cookie and
    the owner's bearer token, drops a client's own origin header and sets the machine's secret."""
    preview = await owner.started(INTRUDER, "intruder")
    session = await owner.sign_in(preview)
    seen = await owner.get(
        preview,
        "/headers",
        cookie=f"{session}; theme=dark",
        authorization=f"Bearer {owner.token}",
        **{"x-velocity-origin": "forged"},
    )
    assert seen.status_code == 200, seen.text
    headers = seen.json()
    assert headers.get("cookie") == "theme=dark", "the app's own cookie passes, ours does not"
    assert "authorization" not in headers
    assert "x-velocity-origin" not in headers, "the agent strips the secret it checked"
    assert headers["fly-replay-src"].startswith(f"instance={ORCHESTRATOR_ID};"), "it came by a replay"
    await owner.api.delete(f"/v1/previews/{preview['id']}")


async def test_no_machine_on_the_private_network_reaches_an_agent_without_its_secret(
    net: Topology, owner: Client
) -> None:
    """The agent listens on [::] (6PN, and the proxy network's IPv4): anything but its health check
    needs the secret only the orchestrator and the replays it asks for carry."""
    preview = await owner.started(INTRUDER, "private-net")
    machine = (await owner.machine(preview["machine_id"])).json()
    six = f"http://[{machine['private_ip']}]:8080"
    by_name = f"http://{preview['machine_id']}.vm.{net.preview_app}.internal:8080"
    answers = await on_node(
        net,
        "rogue",
        PROBE.replace(
            "URLS", repr({"app": f"{six}/", "logs": f"{six}/__velocity/logs", "health": f"{by_name}/health"})
        ),
    )
    assert answers == {"app": 403, "logs": 403, "health": 200}, answers
    await owner.api.delete(f"/v1/previews/{preview['id']}")


async def test_a_body_over_one_megabyte_is_carried_by_the_router_and_smaller_ones_replayed(
    net: Topology, owner: Client
) -> None:
    """Fly cannot replay a request over 1 MB: the router proxies it over the private network itself."""
    preview = await owner.started(INTRUDER, "uploads")
    session = await owner.sign_in(preview)
    host = urlsplit(preview["url"]).netloc
    async with httpx.AsyncClient(base_url=net.edge_url, timeout=60) as browser:
        for size in (200_000, 2_000_000):
            sent = await browser.post(
                "/headers",
                content=b"x" * size,
                headers={"host": host, "cookie": session, "origin": f"https://{host}"},
            )
            assert sent.status_code == 200, (size, sent.text)
            replayed = "fly-replay-src" in sent.json()
            assert replayed == (size <= 1_000_000), (size, sent.json())
    await owner.api.delete(f"/v1/previews/{preview['id']}")


async def test_a_replay_the_machine_does_not_answer_comes_back_to_the_router_as_a_503(
    net: Topology, owner: Client
) -> None:
    """Every replay has a timeout and ``fallback: force_self``: when the machine does not answer in
    time, Fly's proxy hands the request back marked ``fly-replay-failed`` and the router answers 503
    instead of replaying again."""
    preview = await owner.started(INTRUDER, "frozen")
    session = await owner.sign_in(preview)
    async with httpx.AsyncClient(
        base_url=net.api_url, headers={"authorization": f"Bearer {net.token}"}
    ) as fly:
        sandbox = (await fly.get(f"/_flynet/machines/{preview['machine_id']}")).json()["sandbox"]
    with frozen(sandbox_processes(net, sandbox)):
        refused = await owner.get(preview, "/whoami", cookie=session)
    assert refused.status_code == 503, refused.text
    assert "did not take the request Fly&#x27;s proxy replayed" in refused.text
    assert await serves(owner, preview, session), "and then it serves again"
    await owner.api.delete(f"/v1/previews/{preview['id']}")


async def serves(owner: Client, preview: dict[str, Any], session: str, within: float = 60) -> bool:
    """Whether the preview answers 200 within ``within`` seconds (a client retrying its 503s)."""
    async with asyncio.timeout(within):
        for _ in itertools.count():
            if (await owner.get(preview, "/whoami", cookie=session, timeout=within)).status_code == 200:
                return True
            await asyncio.sleep(0.5)
    return False


def sandbox_processes(net: Topology, sandbox: str) -> list[int]:
    """The processes of a sandbox (its shim and every descendant)."""
    root = int(json.loads((net.data / "api" / "sandboxes" / sandbox / "machine.json").read_text())["pid"])
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


@contextlib.contextmanager
def frozen(pids: list[int]) -> Iterator[None]:
    """Stop the processes (they still hold their sockets: connections open, nothing answers)."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


async def test_a_preview_boots_with_a_few_machine_reads_not_a_poll_every_20_ms(
    net: Topology, owner: Client
) -> None:
    """The orchestrator waits with the Machines API's ``wait`` and backs off: a boot costs a handful of
    GETs of the machine, not one every 20 ms."""
    async with httpx.AsyncClient(
        base_url=net.api_url, headers={"authorization": f"Bearer {net.token}"}
    ) as fly:
        before = (await fly.get("/_emulator/stats")).json()["calls"]
        preview = await owner.started(INTRUDER, "counted")
        after = (await fly.get("/_emulator/stats")).json()["calls"]
    calls = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    assert calls.get("wait", 0) >= 1, calls
    assert calls.get("get", 0) <= 6, calls
    await owner.api.delete(f"/v1/previews/{preview['id']}")


async def test_previews_live_on_when_the_orchestrator_restarts_as_a_deploy_restarts_it(
    net: Topology, owner: Client
) -> None:
    """A deploy sends SIGTERM; the image's CMD keeps previews (--keep-previews) and the next
    orchestrator serves them again, as soon as the edge's checks pass."""
    preview = await owner.started(INTRUDER, "deployed")
    session = await owner.sign_in(preview)
    seen = len(net.output["edge"])
    assert await net.stop("orchestrator") == 0
    await net.until("edge", f"machine {ORCHESTRATOR_ID} checks failing", after=seen)
    await net.start_orchestrator()
    await net.until("edge", f"machine {ORCHESTRATOR_ID} checks passing", after=seen)
    answer = await owner.get(preview, "/whoami", cookie=session)
    assert answer.status_code == 200 and answer.json() == {"project": "deployed"}, answer.text
    assert (await owner.machine(preview["machine_id"])).json()["state"] == "started"
    await owner.api.delete(f"/v1/previews/{preview['id']}")


async def test_preview_machines_get_the_kit_s_service_limits_and_checks(net: Topology, owner: Client) -> None:
    """What the edge enforces for a preview comes from preview-container/fly.toml: request-based
    concurrency sized for a Vite page and its HMR sockets, and the agent's health check."""
    preview = await owner.started(INTRUDER, "limits")
    config = (await owner.machine(preview["machine_id"])).json()["config"]
    (service,) = config["services"]
    assert service["concurrency"] == {"type": "requests", "soft_limit": 250, "hard_limit": 500}
    assert [check["path"] for check in service["checks"]] == ["/health"]
    await owner.api.delete(f"/v1/previews/{preview['id']}")
