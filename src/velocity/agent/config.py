"""The agent's environment, read once and checked before anything starts.

=====================  ==============================================================================
PROJECT_ID             required; the project this machine previews
SNAPSHOT_URL           http(s) URL answering the project as a gzip tarball of relative paths; when
                       unset the workspace is used as it is (a provider may have filled it already)
AGENT_TOKEN            sent as ``Authorization: Bearer`` when fetching the snapshot; never passed on
                       to the dev server
WORKSPACE              directory the project is written into (created if missing); default: the
                       current directory
AGENT_ORIGIN_SECRET    when set, every request but ``GET /health`` must carry it in ``x-velocity-origin``
                       (the orchestrator's proof, on Fly's private network); removed before the
                       dev server sees the request
AGENT_SECRETS_FD       an inherited descriptor holding AGENT_TOKEN and AGENT_ORIGIN_SECRET as JSON,
                       read and closed at start instead of the environment (``credentials``)
AGENT_SEAL_FD          an inherited descriptor of a host file: after each install the agent writes there
                       the seal of node_modules (``install_seal``), before any dev server runs
AGENT_USER             uid:gid the project's code (install, dev server) runs as, apart from the agent's
                       own uid (``identity``); unset: as the agent's
AGENT_POLICY_ERROR     set by the image's entrypoint when the machine's network policy could not be
                       applied: the agent then runs none of the project's code and reports why
AGENT_LISTEN_FD        serve HTTP on this inherited, listening socket (a local sandbox's: the host
                       binds it where the sandbox cannot see or replace it)
AGENT_SOCKET           serve HTTP on this unix socket path instead of TCP
CONTAINER_INTERNAL_PORT, PORT
                       the TCP port on [::] (IPv6 and IPv4, as Fly's private network and its proxy
                       need) when neither of the above is set (first one set wins; default 8080)
AGENT_DEV_PORT         the dev server's port on 127.0.0.1; default: a free port, since local sandboxes
                       share the host's network and fixed ports would collide
AGENT_POOLED           "1": a warm-pool machine; PROJECT_ID and SNAPSHOT_URL name the pool's template,
                       and the agent waits for a claim (``claim``) naming the preview it will serve
AGENT_LINGER_SECONDS   how long a failed agent keeps answering ``/health`` before exiting, so that a
                       poller can read why (default 2)
NPM_CONFIG_CACHE       read by npm itself: the provider's shared npm cache
=====================  ==============================================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from velocity.agent.identity import UserCode
from velocity.domain.agent_contract import SEAL_FD_VARIABLE, USER_VARIABLE
from velocity.domain.errors import ConfigError

DEFAULT_PORT = 8080
DEFAULT_LINGER_SECONDS = 2.0
_MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes, the last one a NUL


@dataclass(frozen=True, slots=True)
class AgentConfig:
    project_id: str
    snapshot_url: str | None
    token: str | None
    origin_secret: str | None
    workspace: Path
    socket: str | None
    listen_fd: int | None
    seal_fd: int | None
    user: UserCode | None
    policy_error: str | None
    port: int
    dev_port: int | None
    linger_seconds: float
    pooled: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AgentConfig:
        project_id = env.get("PROJECT_ID", "").strip()
        if not project_id:
            raise ConfigError(
                "PROJECT_ID is not set: the orchestrator passes the project's id to every machine"
            )
        snapshot_url = env.get("SNAPSHOT_URL", "").strip() or None
        if snapshot_url is not None:
            parts = urlsplit(snapshot_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(f"SNAPSHOT_URL must be an http(s) URL, not {redact_url(snapshot_url)!r}")
        socket = env.get("AGENT_SOCKET", "").strip() or None
        if socket is not None and len(os.fsencode(socket)) > _MAX_SOCKET_PATH:
            raise ConfigError(
                f"AGENT_SOCKET is longer than {_MAX_SOCKET_PATH} bytes, the limit of a unix socket path"
            )
        listen_fd = _inherited_fd(env, "AGENT_LISTEN_FD")
        port_name = next(
            (name for name in ("CONTAINER_INTERNAL_PORT", "PORT") if env.get(name, "").strip()), None
        )
        port = _port(env, port_name) if port_name else DEFAULT_PORT
        dev_port = _port(env, "AGENT_DEV_PORT") if env.get("AGENT_DEV_PORT", "").strip() else None
        return cls(
            project_id=project_id,
            snapshot_url=snapshot_url,
            token=env.get("AGENT_TOKEN") or None,
            origin_secret=env.get("AGENT_ORIGIN_SECRET") or None,
            workspace=Path(env.get("WORKSPACE") or os.getcwd()).absolute(),
            socket=socket,
            listen_fd=listen_fd,
            seal_fd=_inherited_fd(env, SEAL_FD_VARIABLE),
            user=UserCode.parse(env[USER_VARIABLE]) if env.get(USER_VARIABLE, "").strip() else None,
            policy_error=env.get("AGENT_POLICY_ERROR", "").strip() or None,
            port=port,
            dev_port=dev_port,
            linger_seconds=_seconds(env, "AGENT_LINGER_SECONDS", DEFAULT_LINGER_SECONDS),
            pooled=_pooled(env, snapshot_url),
        )

    def prepare_workspace(self) -> None:
        """Create the workspace directory; a path that exists but is not a directory stops the start."""
        try:
            self.workspace.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"WORKSPACE {str(self.workspace)!r} cannot be used as a directory: {exc}"
            ) from exc

    @property
    def listen_on(self) -> str:
        if self.listen_fd is not None:
            return f"inherited socket (fd {self.listen_fd})"
        return f"unix:{self.socket}" if self.socket else f"http://[::]:{self.port}"


def _inherited_fd(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 3:
        raise ConfigError(f"{name} must be the number of an inherited file descriptor, not {raw!r}")
    return int(raw)


def _pooled(env: Mapping[str, str], snapshot_url: str | None) -> bool:
    raw = env.get("AGENT_POOLED", "").strip()
    if raw not in ("", "0", "1"):
        raise ConfigError(f"AGENT_POOLED must be 1 (a warm-pool machine) or 0, not {raw[:20]!r}")
    if raw == "1" and snapshot_url is None:
        raise ConfigError(
            "AGENT_POOLED=1 needs SNAPSHOT_URL: the pool's template, and the server claims fetch from"
        )
    return raw == "1"


def _port(env: Mapping[str, str], name: str) -> int:
    raw = env[name].strip()
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ConfigError(f"{name} must be a TCP port number between 1 and 65535, not {raw!r}")
    return int(raw)


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 3600:
        raise ConfigError(f"{name} must be a number of seconds between 0 and 3600, not {raw!r}")
    return value


def redact_url(url: str) -> str:
    """A URL fit for a message: signed URLs carry their credentials in the query."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{parts.path}" if parts.scheme else url[:40]
