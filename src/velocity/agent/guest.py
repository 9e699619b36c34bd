"""The preview image's entrypoint: make the machine safe for the project's code, then become the agent.

Runs as root (``python -m velocity.agent.guest``), before anything of the project:

1. loads the firewall (``AGENT_FIREWALL``, the image's ``/etc/velocity/firewall.nft``): only the agent's
   uid goes out, to the orchestrator, Fly's DNS and public addresses; every other uid reaches
   loopback alone (its dev server and the agent's egress proxy);
2. adds the orchestrator's private addresses and port (``SNAPSHOT_URL``'s host, resolved through
   Fly's DNS before the firewall loads, since it lets no uid but the agent's reach the resolver) to
   the firewall's ``orchestrator`` set;
3. gives the workspace to the project's user (``AGENT_USER``, shared group, setgid);
4. executes the agent as ``AGENT_UID`` with ``CAP_SETUID``, ``CAP_SETGID`` and ``CAP_KILL`` alone
   (ambient, bounded), the egress proxy in the machine (``AGENT_EGRESS=machine``) and the proxy
   variables set for the project's code.

If any step fails (no ``nft``, no ``CAP_NET_ADMIN`` as under a plain ``docker run``, a kernel
without nftables, an orchestrator name that does not resolve), the agent still starts, so that
``/health`` says why, but with ``AGENT_POLICY_ERROR``: it then runs none of the project's code.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

from velocity.agent.egress_bridge import DEFAULT_LISTEN
from velocity.agent.identity import UserCode
from velocity.domain.agent_contract import USER_VARIABLE, as_agent
from velocity.domain.errors import ConfigError

FIREWALL = Path("/etc/velocity/firewall.nft")
AGENT_UID = 10002  # the firewall's AGENT_UID: the one uid it lets out
DEFAULT_USER = "10001:10001"  # the image's ``preview`` user


class PolicyError(Exception):
    pass


def apply_policy(env: Mapping[str, str], user: UserCode) -> None:
    """Steps 1 to 3; a ``PolicyError`` names the one that failed."""
    if os.geteuid() != 0:
        raise PolicyError(
            f"the entrypoint runs as uid {os.geteuid()}, not root, so it cannot load the firewall"
        )
    firewall = Path(env.get("AGENT_FIREWALL") or FIREWALL)
    # Resolved first: once loaded, the firewall lets only the agent's uid reach Fly's resolver.
    orchestrator = orchestrator_elements(env.get("SNAPSHOT_URL", ""))
    _nft("-f", str(firewall))
    if orchestrator:
        _nft("add", "element", "inet", "velocity", "orchestrator", "{ " + ", ".join(orchestrator) + " }")
    workspace = Path(env.get("WORKSPACE") or os.getcwd())
    try:
        workspace.mkdir(parents=True, exist_ok=True)
        os.chown(workspace, user.uid, user.gid)
        workspace.chmod(0o2775)
    except OSError as exc:
        raise PolicyError(f"the workspace {workspace} cannot be given to uid {user.uid}: {exc}") from exc


def orchestrator_elements(snapshot_url: str) -> list[str]:
    """``address . port`` for each IPv6 address of the snapshot URL's host (the orchestrator)."""
    parts = urlsplit(snapshot_url)
    if not parts.hostname:
        return []
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        found = socket.getaddrinfo(parts.hostname, port, socket.AF_INET6, socket.SOCK_STREAM)
    except OSError as exc:
        raise PolicyError(
            f"the orchestrator's name {parts.hostname} does not resolve to IPv6: {exc}"
        ) from exc
    return sorted({f"{info[4][0]} . {port}" for info in found})


def _nft(*args: str) -> None:
    try:
        done = subprocess.run(["nft", *args], capture_output=True, text=True, timeout=30, check=False)
    except OSError as exc:
        raise PolicyError(f"nft cannot run: {exc}") from exc
    if done.returncode != 0:
        if "Operation not permitted" in done.stderr:
            raise PolicyError(
                "the firewall cannot be loaded without CAP_NET_ADMIN (a Fly machine's root has it; "
                "with docker or podman run, add --cap-add NET_ADMIN)"
            )
        first = done.stderr.strip().splitlines()[:3]
        raise PolicyError(f"nft {args[0]} failed: {' '.join(line.strip() for line in first)[:300]}")


def agent_environment(env: MutableMapping[str, str], user: UserCode, failure: str | None) -> None:
    """What the agent starts with: the project's user, the machine's proxy for the project's code
    (the orchestrator not through it: the firewall lets the agent reach it directly)."""
    env[USER_VARIABLE] = f"{user.uid}:{user.gid}"
    env["AGENT_EGRESS"] = "machine"
    proxy = f"http://{DEFAULT_LISTEN[0]}:{DEFAULT_LISTEN[1]}"
    direct = ["localhost", "127.0.0.1", "::1"]
    if host := urlsplit(env.get("SNAPSHOT_URL", "")).hostname:
        direct.append(host)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env[name] = proxy
    env["NO_PROXY"] = env["no_proxy"] = ",".join(direct)
    if failure is not None:
        env["AGENT_POLICY_ERROR"] = failure


def agent_command(user: UserCode) -> list[str]:
    """The agent as its own uid, in the project's group, holding only what starts and stops the
    project's processes."""
    agent = [sys.executable, "-m", "velocity.agent"]
    return agent if os.geteuid() != 0 else as_agent(AGENT_UID, user.gid, agent)


def main() -> NoReturn:
    env = dict(os.environ)
    try:
        user = UserCode.parse(env.get(USER_VARIABLE) or DEFAULT_USER)
    except ConfigError as exc:
        print(f"velocity-guest: {exc.message}", file=sys.stderr)
        raise SystemExit(2) from exc
    failure: str | None = None
    try:
        apply_policy(env, user)
    except PolicyError as exc:
        failure = str(exc)
        print(f"velocity-guest: {failure}; the agent will run none of the project's code", file=sys.stderr)
    agent_environment(env, user, failure)
    command = agent_command(user)
    os.execvpe(command[0], command, env)


if __name__ == "__main__":
    main()
