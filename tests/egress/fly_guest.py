"""A network namespace standing in for a Fly machine, joined by a veth pair to a second one that plays
everything outside it. Addresses on the network side stand for the public internet (198.51.100.9),
the metadata service (169.254.169.254), another machine on Fly's private network (fdaa::5), Fly's DNS
(fdaa::3) and the orchestrator (fdaa::2), each serving TCP on ports 53, 80 and 8000; the machine is
198.51.100.1 and fdaa::1. No packet leaves the two namespaces."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

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


@contextmanager
def fly_guest_network() -> Iterator[Namespaces]:
    """The machine's namespace (no firewall yet) and the network's, serving."""
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
        servers = [serve(ns.network, 53, 80, 8000)]
        yield ns
    finally:
        for server in servers:
            server.kill()
            server.communicate()
        for namespace in (ns.machine, ns.network):
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)
