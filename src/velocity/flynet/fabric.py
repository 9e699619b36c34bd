"""Network namespaces joined by Fly's two networks, made and removed with iproute2 (needs root).

Every node (a machine, the orchestrator, the edge, the API) is a namespace ``<fabric>-<node>``
with one link to each network it is on; the networks are bridges in the fabric's own namespace, so
nothing of this touches the host's network. ``ip netns exec`` gives each node Fly's resolver
(``/etc/netns/<namespace>/resolv.conf``); commands run there with :meth:`Fabric.command`.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from velocity.emulator import ids

ORG_PREFIX = ids.ORG_PREFIX  # the emulated organisation's /48
DNS_ADDRESS = "fdaa::3"  # Fly's resolver, on every machine
API_ADDRESS = "fdaa:0:1:a7b:ffff::1"  # _api.internal, the Machines API on the private network
EDGE_PUBLIC_ADDRESS = "2a09:8280:1::a"  # the edge's address as the internet sees it (Fly's anycast range)
EDGE_PROXY_ADDRESS = "172.19.0.1"  # the edge on the proxy network
ORCHESTRATOR_PROXY_ADDRESS = "172.19.1.2"
PRIVATE_ROUTES = ("fdaa::/16", "2a09:8280::/32")  # on-link on the private network
PROXY_NETWORK = ipaddress.ip_network("172.19.0.0/16")
NETNS_DIR = Path("/etc/netns")  # per-namespace files `ip netns exec` binds (resolv.conf)
NETNS_RUN = Path("/run/netns")  # the namespaces themselves


class FabricError(OSError):
    """A namespace or link could not be made (iproute2's message says why)."""


@dataclass
class Fabric:
    name: str  # a short prefix of every namespace; unique per fabric
    nodes: dict[str, str] = field(default_factory=dict)  # node -> namespace

    @classmethod
    def create(cls, name: str | None = None) -> Fabric:
        if shutil.which("ip") is None:
            raise FabricError("iproute2's `ip` is not installed")
        fabric = cls(name or "vpf" + secrets.token_hex(3))
        _ip("netns", "add", fabric.bridge_namespace)
        for bridge in ("pn6", "px4"):
            _ip("-n", fabric.bridge_namespace, "link", "add", bridge, "type", "bridge")
            _ip("-n", fabric.bridge_namespace, "link", "set", bridge, "up")
        return fabric

    @property
    def bridge_namespace(self) -> str:
        return f"{self.name}-net"

    def namespace(self, node: str) -> str:
        return self.nodes[node]

    def attach(self, node: str, *, private: list[str], proxy: str | None = None) -> None:
        """Make ``node``'s namespace with ``private`` addresses on the private network and, with
        ``proxy``, that address on the proxy network."""
        namespace = f"{self.name}-{node}"
        _ip("netns", "add", namespace)
        self.nodes[node] = namespace
        _ip("-n", namespace, "link", "set", "lo", "up")
        self._link(node, namespace, "pn6", "eth0")
        for address in private:
            prefix = 48 if address.startswith(ORG_PREFIX) else 128
            _ip("-n", namespace, "addr", "add", f"{address}/{prefix}", "dev", "eth0", "nodad")
        for route in PRIVATE_ROUTES:
            _ip("-n", namespace, "-6", "route", "replace", route, "dev", "eth0")
        if proxy is not None:
            self._link(node, namespace, "px4", "eth1")
            _ip("-n", namespace, "addr", "add", f"{proxy}/{PROXY_NETWORK.prefixlen}", "dev", "eth1")
        (NETNS_DIR / namespace).mkdir(parents=True, exist_ok=True)
        (NETNS_DIR / namespace / "resolv.conf").write_text(f"nameserver {DNS_ADDRESS}\n")

    def detach(self, node: str) -> None:
        namespace = self.nodes.pop(node, None)
        if namespace is not None:
            _remove_namespace(namespace)

    def command(self, node: str, *argv: str) -> list[str]:
        """``argv`` run inside ``node``'s namespace, with Fly's resolver."""
        return ["ip", "netns", "exec", self.nodes[node], *argv]

    def network_only(self, node: str, *argv: str) -> list[str]:
        """``argv`` in ``node``'s network namespace alone, keeping this host's mounts: what runs
        podman needs the host's cgroup mounts, which ``ip netns exec`` hides behind a new /sys."""
        return ["nsenter", f"--net={NETNS_RUN / self.nodes[node]}", *argv]

    def destroy(self) -> None:
        """Remove every namespace of this fabric, those other processes attached included."""
        self.nodes.clear()
        for namespace in sorted(NETNS_RUN.glob(f"{self.name}-*")) + sorted(NETNS_DIR.glob(f"{self.name}-*")):
            _remove_namespace(namespace.name)

    def _link(self, node: str, namespace: str, bridge: str, inside: str) -> None:
        # Interface names are at most 15 bytes: a digest of the node's name keeps them short.
        outside = f"{bridge[:2]}{hashlib.sha256(f'{self.name}/{node}'.encode()).hexdigest()[:10]}"
        _ip(
            "-n", self.bridge_namespace, "link", "add", outside, "type", "veth",
            "peer", "name", inside, "netns", namespace,
        )  # fmt: skip
        _ip("-n", self.bridge_namespace, "link", "set", outside, "master", bridge, "up")
        _ip("-n", namespace, "link", "set", inside, "up")


def available() -> str | None:
    """Why this host cannot make a fabric (None: it can)."""
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    probe = "vpfprobe" + secrets.token_hex(2)
    try:
        _ip("netns", "add", probe)
    except FabricError as exc:
        return f"network namespaces cannot be made here: {exc}"
    _remove_namespace(probe)
    return None


def _remove_namespace(namespace: str) -> None:
    """Remove a namespace, ending first whatever still runs in it (a namespace outlives its name
    while a process holds it, and so would the process)."""
    inside = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True, check=False)
    for pid in inside.stdout.split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)
    shutil.rmtree(NETNS_DIR / namespace, ignore_errors=True)


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, check=False)
    if done.returncode != 0:
        raise FabricError(f"ip {' '.join(args)}: {done.stderr.decode(errors='replace').strip()}")
