"""The topology's API node: the Machines API emulator at ``_api.internal:4280``, Fly's resolver at
``fdaa::3``, and each machine a real sandbox in a namespace of its own on both networks.

Run inside the API node's namespace (``python -m velocity.flynet.api``, by ``topology``). A
machine's sandbox runs the agent exactly as the preview image's CMD does, listening on ``[::]`` at
the service's port, with Fly's runtime environment (``FLY_PRIVATE_IP``...); it shares its
machine's network, as a process in a Firecracker guest does. With ``--image``, each machine is the
preview image itself, run by podman in that namespace (``velocity.flynet.images``). ``GET /_flynet/machines/{id}`` tells
the edge where a machine is on the proxy network (Fly's proxy knows; the Machines API does not say).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from velocity.domain import MachineSpec
from velocity.emulator import FlyEmulator
from velocity.emulator.health import probe_http
from velocity.flynet import dns
from velocity.flynet.fabric import API_ADDRESS, DNS_ADDRESS, NETNS_RUN, PROXY_NETWORK, Fabric
from velocity.flynet.images import ImageMachines
from velocity.providers.base import AgentEndpoint, MachineProvider
from velocity.providers.local import LocalSandboxProvider, SandboxOptions

API_PORT = 4280
FIRST_MACHINE_HOST = 4096  # machines' proxy addresses start at 172.19.16.0; nodes' sit below


@dataclass(frozen=True, slots=True)
class Placement:
    sandbox: str  # the local provider's machine
    fly_id: str
    app: str
    node: str
    private_ip: str
    proxy_address: str
    port: int


class MachineNetwork:
    """The local provider's ``NetworkAttachment``: each sandbox a node of the fabric, at the 6PN
    address the emulator gave its machine."""

    def __init__(self, fabric: Fabric) -> None:
        self._fabric = fabric
        self._placed: dict[str, Placement] = {}  # by the sandbox's id
        self._next_host = FIRST_MACHINE_HOST

    def enter(self, machine_id: str, spec: MachineSpec) -> list[str]:
        fly_id = spec.env["FLY_MACHINE_ID"]
        self._next_host += 1
        proxy_address = str(PROXY_NETWORK[self._next_host])
        node = f"m{fly_id}"
        self._fabric.attach(node, private=[spec.env["FLY_PRIVATE_IP"]], proxy=proxy_address)
        self._placed[machine_id] = Placement(
            machine_id,
            fly_id,
            spec.env["FLY_APP_NAME"],
            node,
            spec.env["FLY_PRIVATE_IP"],
            proxy_address,
            spec.internal_port,
        )
        return self._fabric.command(node)

    def leave(self, machine_id: str) -> None:
        placed = self._placed.pop(machine_id, None)
        if placed is not None:
            self._fabric.detach(placed.node)

    def endpoint(self, machine_id: str) -> AgentEndpoint:
        placed = self._placed[machine_id]
        return AgentEndpoint(base_url=f"http://[{placed.private_ip}]:{placed.port}")

    def namespace(self, machine_id: str) -> Path:
        return NETNS_RUN / self._fabric.namespace(self._placed[machine_id].node)

    def find(self, fly_id: str) -> Placement | None:
        return next((p for p in self._placed.values() if p.fly_id == fly_id), None)


def build(args: argparse.Namespace) -> tuple[FlyEmulator, MachineNetwork]:
    fabric = Fabric(args.fabric, nodes={})
    network = MachineNetwork(fabric)
    data = Path(args.data_dir)
    provider: MachineProvider
    if args.image:
        provider = ImageMachines(network, args.image, fabric=args.fabric, data=data / "machines")
    else:
        provider = LocalSandboxProvider(
            SandboxOptions(
                root=data / "sandboxes",
                npm_cache=Path(args.npm_cache),
                modules_cache=None,
                attachment=network,
            )
        )
    emulator = FlyEmulator(provider, apps=args.app, tokens=[args.token], health=probe_http)

    async def where(request: Request) -> JSONResponse:
        placed = network.find(request.path_params["machine_id"])
        if placed is None:
            return JSONResponse({"error": "machine is on no network"}, status_code=404)
        return JSONResponse(
            {
                "proxy_address": placed.proxy_address,
                "private_ip": placed.private_ip,
                "sandbox": placed.sandbox,
            }
        )

    emulator.asgi.router.routes.insert(0, Route("/_flynet/machines/{machine_id}", where))
    return emulator, network


def directory(emulator: FlyEmulator, args: argparse.Namespace) -> dns.Directory:
    static = []
    for entry in args.machine:
        machine_id, app, region, private_ip = entry.split("/")
        static.append(dns.MachineRecord(machine_id, app, region, private_ip, started=True))
    public = dict(item.split("=", 1) for item in args.public)

    def machines() -> list[dns.MachineRecord]:
        return [
            *static,
            *(
                dns.MachineRecord(m.id, m.app, m.region, m.private_ip, started=m.state == "started")
                for m in emulator.fleet.machines.values()
                if m.state != "destroyed"
            ),
        ]

    return dns.Directory(
        machines,
        apps=lambda: {*emulator.apps, *(m.app for m in static)},
        api_address=API_ADDRESS,
        public=public,
    )


class _Server(uvicorn.Server):
    """Says on stdout when it listens, for whoever started this node to wait on."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        print(json.dumps({"ready": True, "api": f"http://[{API_ADDRESS}]:{API_PORT}"}), flush=True)


async def serve(args: argparse.Namespace) -> None:
    emulator, _ = build(args)
    resolver = await dns.serve(directory(emulator, args), DNS_ADDRESS, 53)
    listeners = [socket.socket(fileno=fd) for fd in args.listen_fd]
    own = socket.socket(socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    own.bind((API_ADDRESS, API_PORT))
    listeners.append(own)
    # Open waits and event streams must not hold the shutdown that destroys every machine.
    server = _Server(
        uvicorn.Config(emulator, log_level="warning", lifespan="on", timeout_graceful_shutdown=2)
    )
    try:
        await server.serve(sockets=listeners)
    finally:
        resolver.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m velocity.flynet.api", description=__doc__)
    parser.add_argument("--fabric", required=True, help="the fabric's name (its namespaces' prefix)")
    parser.add_argument("--app", action="append", required=True, help="an app of the organisation")
    parser.add_argument("--token", required=True, help="the Machines API token accepted")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--npm-cache", required=True, help="where users' npm caches live")
    parser.add_argument("--listen-fd", type=int, action="append", default=[], help="an inherited listener")
    parser.add_argument(
        "--machine", action="append", default=[], help="ID/APP/REGION/PRIVATE_IP of a machine run elsewhere"
    )
    parser.add_argument("--public", action="append", default=[], help="NAME=ADDRESS outside .internal")
    parser.add_argument(
        "--image", help="run each machine as this image with podman (velocity.flynet.images), not a sandbox"
    )
    args = parser.parse_args(argv)
    for entry in args.machine:
        ipaddress.IPv6Address(entry.split("/")[3])
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main(sys.argv[1:])
