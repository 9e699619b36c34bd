"""The preview image's entrypoint (``velocity.agent.guest``) as root in a network namespace standing in
for a Fly machine (``tests/egress/fly_guest``): the firewall loaded, the agent as its own uid with
three capabilities, the project's code as another uid with none, and its way out only through the
machine's egress proxy. The attacks come from the intruder project's dev server. The part of
docs/security.md's table "On Fly" that runs here."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.e2e.harness import PROJECTS
from tests.egress.fly_guest import PYTHON, Namespaces, fly_guest_network
from velocity.agent.guest import AGENT_UID

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("nft") is None, reason="nftables is not installed (make setup)"),
]

RULES = Path(__file__).resolve().parents[2] / "preview-container" / "firewall.nft"
USER_UID = 10001
# The agent's Python may live under a private home (/root here): the stand-in for the image shows it
# to the machine's uids in a mount namespace of its own, as the image's /opt/velocity is.
SHOW_RUNTIME = """
set -e
hidden=$VELOCITY_HIDDEN
mkdir "$hidden"
mount --bind /root "$hidden"
mount -t tmpfs -o mode=0755 tmpfs /root
for path in $VELOCITY_RUNTIME; do
    mkdir -p "$path"
    mount --rbind "$hidden${path#/root}" "$path"
done
exec "$@"
"""
GET = """
import json, sys, urllib.request, urllib.error
request = urllib.request.Request("http://127.0.0.1:8080" + sys.argv[1], headers={"x-velocity-origin": sys.argv[2]})
try:
    with urllib.request.urlopen(request, timeout=30) as answer:
        print(json.dumps({"status": answer.status, "body": answer.read().decode()}))
except urllib.error.HTTPError as exc:
    print(json.dumps({"status": exc.code, "body": exc.read().decode()}))
"""
# Run by the project's code: direct connections, and CONNECT through the machine's proxy.
REACH = r"""
import json, os, socket, sys
def direct(host, port):
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.settimeout(3)
    try:
        s.connect((host, port)); return "connected"
    except OSError as exc:
        return "refused" if exc.errno in (111, 113, 13, 1) else type(exc).__name__
def proxied(host, port):
    s = socket.create_connection(("127.0.0.1", 3128), timeout=5)
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    return s.recv(200).split(b"\r\n")[0].decode()
agent = int(sys.argv[1])
try:
    open(f"/proc/{agent}/environ", "rb").read(); environ = "read"
except OSError as exc:
    environ = type(exc).__name__
try:
    os.kill(agent, 0); signal = "sent"
except OSError as exc:
    signal = type(exc).__name__
status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\t" in line)
print(json.dumps({
    "uid": os.getuid(), "groups": os.getgroups(),
    "caps": [status[k].strip() for k in ("CapInh", "CapPrm", "CapEff", "CapAmb")],
    "no_new_privs": status["NoNewPrivs"].strip(),
    "agent_environ": environ, "signal_agent": signal,
    "proxy": os.environ.get("HTTPS_PROXY"),
    "direct": {f"{h}:{p}": direct(h, p) for h, p in
               (("198.51.100.9", 80), ("fdaa::2", 8000), ("fdaa::5", 80), ("169.254.169.254", 80))},
    "proxied": {f"{h}:{p}": proxied(h, p) for h, p in
                (("198.51.100.9", 80), ("198.51.100.9", 8000), ("fdaa::5", 80), ("169.254.169.254", 80))},
}))
"""


@dataclass
class Guest:
    """The image's entrypoint running in the machine's namespace."""

    ns: Namespaces
    process: subprocess.Popen[bytes]
    secret: str
    workspace: Path

    def get(self, path: str) -> dict[str, Any]:
        done = subprocess.run(
            ["ip", "netns", "exec", self.ns.machine, PYTHON, "-c", GET, path, self.secret],
            capture_output=True,
            text=True,
            timeout=40,
            check=True,
        )
        answer: dict[str, Any] = json.loads(done.stdout)
        return answer

    def health(self, until: str, timeout: float = 90) -> dict[str, Any]:
        """``/health`` once the agent reports ``until`` (or fails); polling is how Fly's checks see it."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is None:
                try:
                    body: dict[str, Any] = json.loads(self.get("/health")["body"])
                except (subprocess.CalledProcessError, ValueError):
                    body = {"state": "starting"}
                if body["state"] in (until, "failed") or time.monotonic() > deadline:
                    return body
            elif time.monotonic() > deadline:
                raise AssertionError(f"the guest exited with {self.process.returncode}")
            time.sleep(0.1)  # nothing to wait on in another namespace but its answers


@pytest.fixture(scope="module")
def network() -> Iterator[Namespaces]:
    with fly_guest_network() as ns:
        yield ns


def start_guest(ns: Namespaces, **env: str) -> Guest:
    workspace = Path(tempfile.mkdtemp(prefix="vp-guest-"))
    workspace.chmod(0o755)
    shutil.copytree(PROJECTS / "intruder", workspace / "app")
    (workspace / "home").mkdir(mode=0o777)
    (workspace / "home").chmod(0o777)
    secret = secrets.token_urlsafe(16)
    runtime = " ".join(
        path for path in {str(Path(sys.base_prefix)), str(Path(sys.prefix))} if path.startswith("/root/")
    )
    environment = {
        "PATH": os.environ["PATH"],
        "PROJECT_ID": "guest-app",
        "WORKSPACE": str(workspace / "app"),
        "HOME": str(workspace / "home"),
        "NPM_CONFIG_CACHE": str(workspace / "home" / ".npm"),
        "PORT": "8080",
        "AGENT_ORIGIN_SECRET": secret,
        "AGENT_FIREWALL": str(RULES),
        "PREVIEW_EGRESS_ALLOWLIST": "198.51.100.9:80",
        "PYTHONDONTWRITEBYTECODE": "1",
        "VELOCITY_RUNTIME": runtime,
        "VELOCITY_HIDDEN": str(workspace / "root"),
        **env,
    }
    in_machine = ["ip", "netns", "exec", ns.machine, "unshare", "--mount", "--propagation", "private"]
    process = subprocess.Popen(
        [*in_machine, "sh", "-c", SHOW_RUNTIME, "show-runtime", sys.executable, "-m", "velocity.agent.guest"],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return Guest(ns, process, secret, workspace)


def stop_guest(guest: Guest) -> None:
    guest.process.terminate()
    try:
        guest.process.wait(10)
    except subprocess.TimeoutExpired:
        guest.process.kill()
        guest.process.wait()
    subprocess.run(["ip", "netns", "exec", guest.ns.machine, "nft", "flush", "ruleset"], check=False)
    shutil.rmtree(guest.workspace, ignore_errors=True)


def status_of(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":\t") for line in lines)}


def test_the_project_s_code_runs_as_its_own_uid_and_goes_out_only_through_the_machine_s_proxy(
    network: Namespaces,
) -> None:
    """The agent is uid 10002 with CAP_SETUID, CAP_SETGID and CAP_KILL only; the dev server is 10001
    with no capability and no_new_privs. It cannot read the agent's environment or signal it; it
    reaches no address directly (not the internet, the orchestrator, another machine or the metadata
    service); through the proxy it reaches what PREVIEW_EGRESS_ALLOWLIST lists and nothing else."""
    guest = start_guest(network)
    try:
        health = guest.health("ready")
        assert health["state"] == "ready", health
        agent = status_of(guest.process.pid)  # ip, unshare, sh and the entrypoint exec the agent
        assert agent["Uid"].split()[0] == str(AGENT_UID), agent["Uid"]
        assert agent["Gid"].split()[0] == str(USER_UID), "the agent shares the project's group"
        assert int(agent["CapEff"], 16) == int(agent["CapBnd"], 16) == (1 << 5) | (1 << 6) | (1 << 7)

        query = urlencode({"cmd": PYTHON, "arg": ["-c", REACH, str(guest.process.pid)]}, doseq=True)
        answer = guest.get(f"/exec?{query}")
        assert answer["status"] == 200, answer
        ran = json.loads(answer["body"])
        assert ran["status"] == 0, ran["stderr"]
        seen = json.loads(ran["stdout"])
        assert seen["uid"] == USER_UID and seen["groups"] == []
        assert seen["caps"] == ["0000000000000000"] * 4 and seen["no_new_privs"] == "1"
        assert seen["agent_environ"] == "PermissionError"
        assert seen["signal_agent"] == "PermissionError"
        assert seen["proxy"] == "http://127.0.0.1:3128"
        assert set(seen["direct"].values()) == {"refused"}, seen["direct"]
        proxied = seen["proxied"]
        assert proxied.pop("198.51.100.9:80").endswith("200 Connection established"), seen["proxied"]
        assert all(" 403 " in line for line in proxied.values()), proxied
    finally:
        stop_guest(guest)


def test_a_machine_whose_firewall_cannot_be_loaded_runs_none_of_the_project_s_code(
    network: Namespaces,
) -> None:
    """When the entrypoint cannot apply the network policy, the agent answers /health with why and
    starts neither the install nor the dev server."""
    guest = start_guest(network, AGENT_FIREWALL="/nonexistent/firewall.nft")
    try:
        health = guest.health("ready", timeout=30)
        assert health["state"] == "failed", health
        assert "network policy could not be applied" in health["detail"], health["detail"]
        assert "nft -f failed" in health["detail"], health["detail"]
        assert health["dev_server"]["pid"] is None
        assert not (guest.workspace / "app" / "package-lock.json").exists(), "npm never ran"
    finally:
        stop_guest(guest)
