"""The preview image's firewall (preview-container/firewall.nft), loaded into network namespaces this
test creates: a "machine" and a "network" joined by a veth pair. Addresses on the network side stand
for the public internet (198.51.100.9), the metadata service (169.254.169.254), another machine on
Fly's private network (fdaa::5) and the orchestrator (fdaa::2); no packet leaves the two namespaces."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

RULES = Path(__file__).resolve().parents[2] / "preview-container" / "firewall.nft"
AGENT_UID, USER_UID = 10002, 10001
PYTHON = "/usr/bin/python3"  # readable by any uid, unlike a virtualenv under /root

SERVE = """
import socket, sys
listeners = []
for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
    for port in map(int, sys.argv[1:]):
        s = socket.socket(family)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((host, port)); s.listen(); s.setblocking(False); listeners.append(s)
print("ready", flush=True)
import selectors
sel = selectors.DefaultSelector()
for s in listeners:
    sel.register(s, selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        conn, _ = key.fileobj.accept(); conn.close()
"""
CONNECT = """
import errno, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
s.settimeout(3)
try:
    s.connect((host, port)); print("connected")
except OSError as exc:
    # A reject, from the other side or from the machine's own rules; a timeout would be a silent drop.
    rejects = (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.EACCES, errno.EPERM)
    print("refused" if exc.errno in rejects else exc.__class__.__name__)
"""

pytestmark = pytest.mark.skipif(shutil.which("nft") is None, reason="nftables is not installed (make setup)")


def run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, f"{argv}: {done.stderr}"
    return done.stdout


@dataclass
class Namespaces:
    machine: str
    network: str

    def connect(self, side: str, uid: int, host: str, port: int) -> str:
        namespace = self.machine if side == "machine" else self.network
        privileges = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"] if uid else []
        return run(
            "ip", "netns", "exec", namespace, *privileges, PYTHON, "-c", CONNECT, host, str(port)
        ).strip()


def serve(namespace: str, *ports: int) -> subprocess.Popen[str]:
    server = subprocess.Popen(
        ["ip", "netns", "exec", namespace, PYTHON, "-c", SERVE, *map(str, ports)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    assert server.stdout.readline().strip() == "ready", server.stderr.read() if server.stderr else ""
    return server


@pytest.fixture(scope="module")
def fly_machine() -> Iterator[Namespaces]:
    """The machine's namespace with the firewall loaded, a network namespace beside it serving on
    ports 53, 80 and 8000 of every address, and the machine serving its agent (8080) and a dev
    server (5173) on all addresses."""
    tag = secrets.token_hex(3)
    ns = Namespaces(machine=f"vpfw-m-{tag}", network=f"vpfw-n-{tag}")
    servers: list[subprocess.Popen[str]] = []
    run("ip", "netns", "add", ns.machine)
    try:
        run("ip", "netns", "add", ns.network)
        run(
            "ip",
            "link",
            "add",
            f"vpm{tag}",
            "netns",
            ns.machine,
            "type",
            "veth",
            "peer",
            "name",
            f"vpn{tag}",
            "netns",
            ns.network,
        )
        for namespace, device, addresses in (
            (ns.machine, f"vpm{tag}", ["198.51.100.1/24", "fdaa::1/64"]),
            (
                ns.network,
                f"vpn{tag}",
                ["198.51.100.9/24", "169.254.169.254/16", "fdaa::2/64", "fdaa::3/64", "fdaa::5/64"],
            ),
        ):
            for address in addresses:
                run(
                    "ip",
                    "-n",
                    namespace,
                    "addr",
                    "add",
                    address,
                    "dev",
                    device,
                    *(["nodad"] if ":" in address else []),
                )
            run("ip", "-n", namespace, "link", "set", device, "up")
            run("ip", "-n", namespace, "link", "set", "lo", "up")
        run("ip", "-n", ns.machine, "route", "add", "169.254.0.0/16", "dev", f"vpm{tag}")
        run("ip", "netns", "exec", ns.machine, "nft", "-f", str(RULES))
        run(
            "ip",
            "netns",
            "exec",
            ns.machine,
            "nft",
            "add",
            "element",
            "inet",
            "velocity",
            "orchestrator",
            "{ fdaa::2 }",
        )
        servers = [serve(ns.network, 53, 80, 8000), serve(ns.machine, 8080, 5173)]
        yield ns
    finally:
        for server in servers:
            server.kill()
            server.communicate()
        for namespace in (ns.machine, ns.network):
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)


def test_the_ruleset_passes_nfts_own_check() -> None:
    """``nft -c`` accepts the file as the image would load it (checked in a namespace of its own)."""
    run("unshare", "--net", "nft", "-c", "-f", str(RULES))


@pytest.mark.parametrize(
    ("uid", "host", "port", "outcome"),
    [
        (USER_UID, "127.0.0.1", 5173, "connected"),  # its own dev server
        (USER_UID, "198.51.100.9", 80, "refused"),  # the internet: only via the proxy
        (USER_UID, "fdaa::2", 8000, "refused"),  # not even the orchestrator
        (USER_UID, "169.254.169.254", 80, "refused"),
        (AGENT_UID, "198.51.100.9", 80, "connected"),  # the proxy's way out
        (AGENT_UID, "fdaa::2", 8000, "connected"),  # the orchestrator
        (AGENT_UID, "fdaa::3", 53, "connected"),  # Fly's DNS
        (AGENT_UID, "fdaa::5", 80, "refused"),  # another machine on the private network
        (AGENT_UID, "fdaa::2", 22, "refused"),  # the orchestrator's other ports
        (AGENT_UID, "169.254.169.254", 80, "refused"),  # metadata, even for the agent
        (0, "fdaa::5", 80, "refused"),  # root is no exception
    ],
)
def test_from_the_machine_only_the_agent_goes_out_and_never_to_private_addresses(
    fly_machine: Namespaces, uid: int, host: str, port: int, outcome: str
) -> None:
    """User code reaches loopback alone; the agent reaches the orchestrator, DNS and public addresses."""
    assert fly_machine.connect("machine", uid, host, port) == outcome


@pytest.mark.parametrize(("port", "outcome"), [(8080, "connected"), (5173, "refused")])
def test_from_the_private_network_only_the_agents_port_answers(
    fly_machine: Namespaces, port: int, outcome: str
) -> None:
    """Another machine on the private network reaches the agent, never the dev server behind it."""
    assert fly_machine.connect("network", 0, "fdaa::1", port) == outcome
