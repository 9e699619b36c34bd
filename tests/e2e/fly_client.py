"""A user of the Fly topology, from the internet: the API through the edge, previews by host name
(tests/e2e/test_fly_topology.py, tests/images)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from velocity.cli.push import Plan, batches
from velocity.flynet.topology import PUBLIC_HOST, Topology
from velocity.projects import pack_directory
from velocity.realtime.contract import FILES_BATCH, preview_topic


def mint_token(net: Topology, user: str) -> str:
    """A user's API token, minted with the orchestrator's own secrets (``velocity token``)."""
    minted = subprocess.run(
        [str(Path(sys.executable).with_name("velocity")), "token", "--user", user],
        env=net.orchestrator_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    return minted.stdout.strip().splitlines()[-1]


class Client:
    """A user of the topology, from the internet: the API through the edge, previews by host name."""

    def __init__(self, net: Topology, token: str) -> None:
        self.net = net
        self.token = token
        self.api = httpx.AsyncClient(
            base_url=net.edge_url,
            headers={"host": PUBLIC_HOST, "authorization": f"Bearer {token}"},
            timeout=60,
        )

    async def aclose(self) -> None:
        await self.api.aclose()

    async def started(self, directory: Path, project_id: str) -> dict[str, Any]:
        snapshot = pack_directory(directory, max_bytes=50 << 20)
        put = await self.api.put(
            f"/v1/projects/{project_id}", content=snapshot.data, headers={"content-type": "application/gzip"}
        )
        assert put.status_code in (200, 201), put.text
        created = await self.api.post("/v1/previews", json={"project_id": project_id})
        assert created.status_code == 201, created.text
        preview: dict[str, Any] = created.json()
        await self.until_state(preview["id"], "ready")
        ready: dict[str, Any] = (await self.api.get(f"/v1/previews/{preview['id']}")).json()
        assert ready["state"] == "ready", ready
        return ready

    async def until_state(self, preview_id: str, wanted: str, timeout: float = 120) -> None:
        """Follow the preview's event stream (through the edge) until it enters ``wanted``."""
        async with (
            asyncio.timeout(timeout),
            self.api.stream("GET", f"/v1/previews/{preview_id}/events") as events,
        ):
            assert events.status_code == 200
            kind = ""
            async for line in events.aiter_lines():
                if line.startswith("event: "):
                    kind = line.removeprefix("event: ")
                elif line.startswith("data: ") and kind == "state":
                    data = json.loads(line.removeprefix("data: "))
                    if data["state"] == wanted:
                        return
                    assert data["state"] not in ("failed", "stopped"), (
                        f"the preview ended before {wanted}: {data}"
                    )
        raise AssertionError(f"the event stream ended before {wanted}")

    async def sign_in(self, preview: dict[str, Any]) -> str:
        """Open the signed link as a browser would; the session cookie it sets."""
        link = urlsplit(preview["access_url"])
        async with httpx.AsyncClient(base_url=self.net.edge_url, timeout=30) as browser:
            page = await browser.get(f"{link.path}?{link.query}", headers={"host": link.netloc})
        assert page.status_code == 200, page.text
        return page.headers["set-cookie"].split(";", 1)[0]

    async def get(
        self, preview: dict[str, Any], path: str, *, timeout: float = 30, **headers: str
    ) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.net.edge_url, timeout=timeout) as browser:
            return await browser.get(path, headers={"host": urlsplit(preview["url"]).netloc, **headers})

    async def broadcast(self, project_id: str, files: dict[str, bytes]) -> None:
        """Send files to the project's preview as an editor does: a ``files_batch`` on its channel,
        through the Realtime REST broadcast the orchestrator's hub serves (through the edge)."""
        realtime = (await self.api.get("/v1/realtime")).json()
        assert urlsplit(realtime["url"]).netloc == PUBLIC_HOST, realtime
        (payload,) = batches(Plan(changed=files))
        message = {"topic": preview_topic(project_id), "event": FILES_BATCH, "payload": {**payload, "seq": 1}}
        sent = await self.api.post(
            f"{urlsplit(realtime['url']).path}/api/broadcast",
            json={"messages": [{**message, "private": True}]},
            headers={"apikey": realtime["anon_key"]},
        )
        assert sent.status_code == 202, sent.text

    async def machine(self, machine_id: str) -> httpx.Response:
        """The preview machine as the Machines API shows it (a test's own look, not through the edge)."""
        async with httpx.AsyncClient(
            base_url=self.net.api_url, headers={"authorization": f"Bearer {self.net.token}"}
        ) as fly:
            return await fly.get(f"/v1/apps/{self.net.preview_app}/machines/{machine_id}")

    async def machine_gone(self, machine_id: str) -> bool:
        """Whether the machine is destroyed (waiting with the Machines API while it is destroying)."""
        async with httpx.AsyncClient(
            base_url=self.net.api_url, headers={"authorization": f"Bearer {self.net.token}"}, timeout=40
        ) as fly:
            waited = await fly.get(
                f"/v1/apps/{self.net.preview_app}/machines/{machine_id}/wait",
                params={"state": "destroyed", "timeout": 30},
            )
        return waited.status_code in (200, 404)
