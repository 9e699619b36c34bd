"""Fly's edge proxy, for what the orchestrator and its previews use of it.

* **Routing**: a request's ``Host`` picks the app (``EdgeConfig.apps``: the orchestrator's public
  hostname and the wildcard preview domain both belong to the orchestrator's app); the request goes
  to one of the app's machines over the proxy network, at the service's ``internal_port``.
* **Checks**: the service's HTTP checks run against every machine of a configured app, every
  ``interval`` after ``grace_period``; a machine gets traffic only once its checks pass. Until one
  does, requests wait (``ROUTE_WAIT`` seconds), then get 503.
* **Concurrency**: at most ``hard_limit`` requests (websockets included, for as long as they are
  open) at once per machine; more wait for a slot, as long as ``ROUTE_WAIT``, then get 503.
* **fly-replay**: an answer with a ``fly-replay`` header (``instance=``, ``app=``, ``timeout=``,
  ``fallback=``) or a ``application/vnd.fly.replay+json`` body (``transform`` deletes and sets
  headers) is not passed on: the original request is sent again to the machine named, with
  ``fly-replay-src``. A stopped target is started first. A body over 1 MB cannot be replayed; a
  failed replay with ``fallback=force_self`` goes back to the first machine with
  ``fly-replay-failed``, otherwise the client gets 502. A websocket's upgrade request is replayed
  the same way.

Machines of apps without a configured machine list (the previews' app) are looked up through the
Machines API (their state and services) and the topology's own directory (their proxy address).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fnmatch
import json
import logging
import secrets
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import stamina
import uvicorn
import websockets
from starlette.types import Receive, Scope, Send
from websockets.exceptions import ConnectionClosed, InvalidStatus

from velocity.emulator.wire import parse_duration

log = logging.getLogger(__name__)

MAX_REPLAY_BODY = 1_000_000
ROUTE_WAIT = 10.0  # seconds a request waits for a healthy machine with a free slot
REPLAY_CONTENT_TYPE = "application/vnd.fly.replay+json"
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "host"}
)
REGION = "ord"


@dataclass
class MachineSlot:
    id: str
    address: str
    port: int
    hard_limit: int | None
    checks: list[dict[str, Any]]
    passing: bool = False
    in_flight: int = 0
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    apps: Mapping[str, Mapping[str, Any]]  # name -> {"hosts": [...], "machines": [...], "services": [...]}
    machines_api: str
    token: str
    directory: str  # the topology's machine directory: proxy addresses by machine id

    @classmethod
    def from_json(cls, text: str) -> EdgeConfig:
        data = json.loads(text)
        return cls(
            apps=data["apps"],
            machines_api=data["machines_api"],
            token=data["token"],
            directory=data["directory"],
        )


class Edge:
    def __init__(self, config: EdgeConfig) -> None:
        self._config = config
        self._slots: dict[str, MachineSlot] = {}
        self._static: dict[str, list[MachineSlot]] = {}
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(60, connect=5), follow_redirects=False)
        self._api = httpx.AsyncClient(
            base_url=config.machines_api, headers={"Authorization": f"Bearer {config.token}"}, timeout=30
        )
        self._checkers: list[asyncio.Task[None]] = []
        self.requests = 0

    async def start(self) -> None:
        for app, spec in self._config.apps.items():
            service = _http_service(spec.get("services") or [])
            slots = []
            for machine in spec.get("machines", []):
                slot = _slot(machine["id"], machine["address"], service)
                self._slots[slot.id] = slot
                slots.append(slot)
                self._checkers.append(asyncio.create_task(self._check(slot), name=f"edge-check-{slot.id}"))
            self._static[app] = slots

    async def aclose(self) -> None:
        for task in self._checkers:
            task.cancel()
        for task in self._checkers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._client.aclose()
        await self._api.aclose()

    # --- ASGI -----------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send, self)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.requests += 1
        body = await _read_body(receive)
        headers = _headers(scope)
        app = self._app_for(headers.get("host", ""))
        if app is None:
            await _plain(send, 404, f"no app answers for host {headers.get('host', '')!r}")
            return
        try:
            async with self._routed(app) as slot:
                answer = await self._send(slot, scope, _forwarded(headers, scope), body)
                replay = await _replay_of(answer)
                if replay is None:
                    await _relay(answer, send)
                    return
                await answer.aclose()
                await self._replay_http(slot, replay, scope, headers, body, send)
        except _EdgeError as exc:
            await _plain(send, exc.status, exc.message)

    async def _replay_http(
        self,
        source: MachineSlot,
        replay: dict[str, Any],
        scope: Scope,
        headers: dict[str, str],
        body: bytes,
        send: Send,
    ) -> None:
        if len(body) > MAX_REPLAY_BODY:
            raise _EdgeError(502, "fly-replay: a request body over 1 MB cannot be replayed")
        try:
            target = await self._target(replay)
            replayed = _transformed(_forwarded(headers, scope), replay) | {
                "fly-replay-src": _replay_src(source)
            }
            async with self._holding(target):
                answer = await self._send(target, scope, replayed, body, timeout=_timeout(replay))
                await _relay(answer, send)
        except (_EdgeError, httpx.HTTPError) as exc:
            if replay.get("fallback") != "force_self":
                raise _EdgeError(502, f"fly-replay failed: {exc}") from exc
            reason = type(exc.__cause__ or exc).__name__
            failed = _forwarded(headers, scope) | {
                "fly-replay-failed": f"instance={replay.get('instance')};reason={reason}"
            }
            async with self._holding(source):
                await _relay(await self._send(source, scope, failed, body), send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.requests += 1
        headers = _headers(scope)
        app = self._app_for(headers.get("host", ""))
        if app is None:
            await _reject(send, 404, f"no app answers for host {headers.get('host', '')!r}")
            return
        if (await receive())["type"] != "websocket.connect":
            return
        protocols = list(scope.get("subprotocols", []))
        try:
            async with self._routed(app) as slot:
                try:
                    upstream = await _connect(slot, scope, _forwarded(headers, scope), protocols)
                except InvalidStatus as refused:
                    replay = _replay_in(refused)
                    if replay is None:
                        await _reject(
                            send, refused.response.status_code, refused.response.body.decode(errors="replace")
                        )
                        return
                    target = await self._target(replay)
                    replayed = _transformed(_forwarded(headers, scope), replay) | {
                        "fly-replay-src": _replay_src(slot)
                    }
                    async with self._holding(target):
                        try:
                            upstream = await _connect(target, scope, replayed, protocols)
                        except InvalidStatus as again:
                            body = again.response.body.decode(errors="replace")
                            await _reject(send, again.response.status_code, body)
                            return
                        await _pump(upstream, receive, send)
                    return
                await _pump(upstream, receive, send)
        except _EdgeError as exc:
            await _reject(send, exc.status, exc.message)
        except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
            print(f"edge: websocket to {headers.get('host')} failed: {exc!r}", flush=True)
            await _reject(send, 502, f"could not reach the machine: {exc}")

    # --- machines ---------------------------------------------------------------------------------
    def _app_for(self, host: str) -> str | None:
        name = host.split(":")[0].lower()
        for app, spec in self._config.apps.items():
            if any(fnmatch.fnmatch(name, pattern) for pattern in spec.get("hosts", [])):
                return app
        return None

    @contextlib.asynccontextmanager
    async def _routed(self, app: str) -> Any:
        """A healthy machine of ``app`` with a free slot, held for the request's duration."""
        slots = self._static.get(app, [])

        def free() -> MachineSlot | None:
            ready = [s for s in slots if s.passing and (s.hard_limit is None or s.in_flight < s.hard_limit)]
            return min(ready, key=lambda s: s.in_flight) if ready else None

        if not slots:
            raise _EdgeError(503, f"app {app} has no machines")
        changed = slots[0].changed
        try:
            async with asyncio.timeout(ROUTE_WAIT), changed:
                await changed.wait_for(lambda: free() is not None)
        except TimeoutError:
            raise _EdgeError(503, f"no machine of {app} is healthy with a free slot") from None
        slot = free()
        assert slot is not None
        async with self._holding(slot):
            yield slot

    @contextlib.asynccontextmanager
    async def _holding(self, slot: MachineSlot) -> Any:
        if slot.hard_limit is not None and slot.in_flight >= slot.hard_limit:
            try:
                async with asyncio.timeout(ROUTE_WAIT), slot.changed:
                    await slot.changed.wait_for(
                        lambda: slot.hard_limit is None or slot.in_flight < slot.hard_limit
                    )
            except TimeoutError:
                raise _EdgeError(
                    503, f"machine {slot.id} is at its hard limit of {slot.hard_limit}"
                ) from None
        slot.in_flight += 1
        try:
            yield slot
        finally:
            slot.in_flight -= 1
            async with slot.changed:
                slot.changed.notify_all()

    async def _target(self, replay: dict[str, Any]) -> MachineSlot:
        """The machine a replay names, started if it is stopped, as Fly's proxy does."""
        app, instance = replay.get("app"), replay.get("instance")
        if not app or not instance:
            raise _EdgeError(502, "fly-replay without app and instance is not emulated")
        found = await self._api.get(f"/v1/apps/{app}/machines/{instance}")
        if found.status_code != 200:
            raise _EdgeError(502, f"fly-replay: machine {instance} of {app} not found")
        machine = found.json()
        woken = machine["state"] in ("stopped", "suspended")
        if woken:
            await self._api.post(f"/v1/apps/{app}/machines/{instance}/start")
            await self._api.get(
                f"/v1/apps/{app}/machines/{instance}/wait", params={"state": "started", "timeout": 60}
            )
        elif machine["state"] != "started":
            raise _EdgeError(502, f"fly-replay: machine {instance} is {machine['state']}")
        where = await self._api.get(f"{self._config.directory}/{instance}")
        if where.status_code != 200:
            raise _EdgeError(502, f"fly-replay: machine {instance} is on no network")
        service = _http_service(machine["config"].get("services") or [])
        known = self._slots.get(instance)
        if known is None or known.address != where.json()["proxy_address"]:
            known = _slot(instance, where.json()["proxy_address"], service)
            known.passing = True
            self._slots[instance] = known
        if woken:
            await _until_listening(known, timeout=_timeout(replay) or ROUTE_WAIT)
        return known

    async def _send(
        self,
        slot: MachineSlot,
        scope: Scope,
        headers: Mapping[str, str],
        body: bytes,
        *,
        timeout: float | None = None,
    ) -> httpx.Response:
        url = f"http://{slot.address}:{slot.port}{scope.get('raw_path', scope['path'].encode()).decode()}"
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        request = self._client.build_request(
            scope["method"],
            url,
            headers=list(headers.items()),
            content=body,
            timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
        )
        try:
            return await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise _EdgeError(502, f"could not reach machine {slot.id}: {exc}") from exc

    async def _check(self, slot: MachineSlot) -> None:
        """Run the machine's HTTP checks forever; ``passing`` is true while all of them pass."""
        checks = slot.checks or [{"path": None}]
        grace = min((_seconds(c.get("grace_period"), 0) for c in checks), default=0)
        interval = min((_seconds(c.get("interval"), 15) for c in checks), default=15)
        started = time.monotonic()
        while True:
            results = []
            for check in checks:
                if check.get("path") is None:
                    results.append(True)  # no checks: routable at once
                    continue
                try:
                    answer = await self._client.get(
                        f"http://{slot.address}:{check.get('port', slot.port)}{check['path']}",
                        timeout=_seconds(check.get("timeout"), 2),
                    )
                    results.append(answer.status_code < 400)
                except httpx.HTTPError:
                    results.append(False)
            passing = all(results)
            if passing != slot.passing:
                log.info("machine %s checks %s", slot.id, "passing" if passing else "failing")
                print(f"edge: machine {slot.id} checks {'passing' if passing else 'failing'}", flush=True)
            slot.passing = passing
            async with slot.changed:
                slot.changed.notify_all()
            # Checks start polling at once and keep a short beat until the first pass (the grace
            # period only excuses failures), then follow the interval.
            within_grace = time.monotonic() - started < grace
            await asyncio.sleep(interval if passing and not within_grace else min(interval, 0.2))


async def _until_listening(slot: MachineSlot, *, timeout: float) -> None:
    """A machine just started takes a moment to listen; Fly's proxy retries its connection until
    then (refused connections, with a short backoff), within the replay's timeout."""
    async for attempt in stamina.retry_context(
        on=OSError, timeout=timeout, attempts=None, wait_initial=0.02, wait_max=0.5, wait_jitter=0
    ):
        with attempt:
            _, writer = await asyncio.open_connection(slot.address, slot.port)
            writer.close()
            await writer.wait_closed()


class _EdgeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _slot(machine_id: str, address: str, service: Mapping[str, Any]) -> MachineSlot:
    concurrency = service.get("concurrency") or {}
    return MachineSlot(
        id=machine_id,
        address=address,
        port=int(service.get("internal_port", 8080)),
        hard_limit=concurrency.get("hard_limit"),
        checks=[c for c in service.get("checks") or [] if c.get("type", "http") == "http"],
    )


def _http_service(services: list[dict[str, Any]]) -> dict[str, Any]:
    for service in services:
        if any("http" in (port.get("handlers") or []) for port in service.get("ports") or []):
            return service
    return services[0] if services else {"internal_port": 8080}


def _seconds(value: Any, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, int | float):
        return float(value) / 1000 if value > 1000 else float(value)
    return parse_duration(str(value), what="check duration")


def _headers(scope: Scope) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, value in scope.get("headers", ()):
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        found[key] = f"{found[key]}{'; ' if key == 'cookie' else ', '}{text}" if key in found else text
    return found


def _forwarded(headers: Mapping[str, str], scope: Scope) -> dict[str, str]:
    """The request as Fly's proxy passes it on: hop-by-hop headers gone, Fly's own added."""
    client = (scope.get("client") or ("", 0))[0]
    passed = {k: v for k, v in headers.items() if k not in HOP_BY_HOP}
    passed["host"] = headers.get("host", "")
    passed.setdefault("fly-request-id", secrets.token_hex(10) + f"-{REGION}")
    passed["fly-client-ip"] = client
    passed["x-forwarded-for"] = ", ".join(filter(None, (headers.get("x-forwarded-for"), client)))
    passed["x-forwarded-proto"] = "http"
    passed["fly-region"] = REGION
    passed["via"] = "1.1 fly.io"
    return passed


async def _replay_of(answer: httpx.Response) -> dict[str, Any] | None:
    if answer.headers.get("content-type", "").split(";")[0].strip() == REPLAY_CONTENT_TYPE:
        body = await answer.aread()
        data: dict[str, Any] = json.loads(body)
        return data
    header = answer.headers.get("fly-replay")
    return _parse_replay_header(header) if header else None


def _replay_in(refused: InvalidStatus) -> dict[str, Any] | None:
    response = refused.response
    if response.headers.get("content-type", "").split(";")[0].strip() == REPLAY_CONTENT_TYPE:
        data: dict[str, Any] = json.loads(response.body or b"{}")
        return data
    header = response.headers.get("fly-replay")
    return _parse_replay_header(header) if header else None


def _parse_replay_header(value: str) -> dict[str, Any]:
    """``instance=ID;app=NAME;timeout=5s;fallback=force_self`` (Fly's docs separate fields with ``;``)."""
    fields: dict[str, Any] = {}
    for part in value.split(";"):
        key, _, item = part.strip().partition("=")
        if key:
            fields[key.strip()] = item.strip().strip('"')
    return fields


def _transformed(headers: dict[str, str], replay: Mapping[str, Any]) -> dict[str, str]:
    transform = replay.get("transform") or {}
    out = {
        k: v for k, v in headers.items() if k not in {d.lower() for d in transform.get("delete_headers", [])}
    }
    for item in transform.get("set_headers", []):
        out[str(item["name"]).lower()] = str(item["value"])
    return out


def _replay_src(source: MachineSlot) -> str:
    return f"instance={source.id};region={REGION};t={int(time.time() * 1_000_000)}"


def _timeout(replay: Mapping[str, Any]) -> float | None:
    value = replay.get("timeout")
    return parse_duration(str(value), what="replay timeout") if value else None


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


async def _relay(answer: httpx.Response, send: Send) -> None:
    headers = [
        (k.encode("latin-1"), v.encode("latin-1"))
        for k, v in answer.headers.multi_items()
        if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"
    ]
    await send({"type": "http.response.start", "status": answer.status_code, "headers": headers})
    try:
        async for chunk in answer.aiter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    finally:
        await answer.aclose()
    await send({"type": "http.response.body", "body": b""})


async def _plain(send: Send, status: int, message: str) -> None:
    await send(
        {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]}
    )
    await send({"type": "http.response.body", "body": message.encode() + b"\n"})


async def _reject(send: Send, status: int, message: str) -> None:
    await send(
        {
            "type": "websocket.http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "websocket.http.response.body", "body": message.encode()})


async def _connect(
    slot: MachineSlot, scope: Scope, headers: Mapping[str, str], protocols: list[str]
) -> websockets.ClientConnection:
    path = scope.get("raw_path", scope["path"].encode()).decode()
    if scope.get("query_string"):
        path += "?" + scope["query_string"].decode("latin-1")
    skip = {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
    }
    passed = [(k, v) for k, v in headers.items() if k not in skip and k != "host"]
    # The URI names the request's host (the Host header); the connection goes to the machine.
    return await websockets.connect(
        f"ws://{headers.get('host', slot.address)}{path}",
        host=slot.address,
        port=slot.port,
        additional_headers=passed,
        subprotocols=protocols or None,  # type: ignore[arg-type]
        open_timeout=30,
        max_size=None,
        compression=None,
    )


async def _pump(upstream: websockets.ClientConnection, receive: Receive, send: Send) -> None:
    """Carry frames both ways until either side closes."""
    await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})

    async def down() -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in upstream:
                key = "text" if isinstance(message, str) else "bytes"
                await send({"type": "websocket.send", key: message})
        code = upstream.close_code or 1000
        with contextlib.suppress(RuntimeError, OSError):
            await send({"type": "websocket.close", "code": code if code != 1006 else 1011})

    async def up() -> None:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                await upstream.close(message.get("code", 1000))
                return
            with contextlib.suppress(ConnectionClosed):
                await upstream.send(message["text"] if message.get("text") is not None else message["bytes"])

    tasks = [asyncio.create_task(down()), asyncio.create_task(up())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await upstream.close()


async def _lifespan(receive: Receive, send: Send, edge: Edge) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await edge.start()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await edge.aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return


class _Server(uvicorn.Server):
    """Says on stdout when it listens, for whoever started the edge to wait on."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        print(json.dumps({"ready": True}), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m velocity.flynet.edge", description=__doc__)
    parser.add_argument("--config", required=True, help="the edge's JSON configuration (EdgeConfig)")
    parser.add_argument("--listen-fd", type=int, action="append", default=[], help="an inherited listener")
    parser.add_argument("--listen", action="append", default=[], help="HOST:PORT to listen on as well")
    args = parser.parse_args(argv)
    edge = Edge(EdgeConfig.from_json(Path(args.config).read_text()))
    listeners = [socket.socket(fileno=fd) for fd in args.listen_fd]
    for where in args.listen:
        host, _, port = where.rpartition(":")
        own = socket.socket(
            socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP
        )
        own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        own.bind((host.strip("[]"), int(port)))
        listeners.append(own)
    server = _Server(uvicorn.Config(edge, log_level="warning", lifespan="on", ws="websockets-sansio"))
    asyncio.run(server.serve(sockets=listeners))


if __name__ == "__main__":
    main(sys.argv[1:])
