"""Carry a sandbox's proxy traffic from 127.0.0.1:3128 to the egress proxy's unix socket, unchanged.

A local sandbox has no network but its own loopback. ``HTTP_PROXY``/``HTTPS_PROXY`` point npm, the
agent's snapshot fetch and the app's server-side code at this bridge, which passes every connection to
the egress proxy (the orchestrator's, bind-mounted at ``AGENT_EGRESS_SOCKET``); the proxy decides.
The bridge runs in threads and starts before the snapshot fetch and the install, which run before the
agent's event loop exists (``main`` orders the start for speed), so an asyncio extension would come
too late for them.

AGENT_EGRESS_SOCKET  the egress proxy's unix socket; no bridge when unset
AGENT_EGRESS_LISTEN  where the bridge listens, host:port (default 127.0.0.1:3128)
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Mapping

from velocity.agent.logs import LogBuffer

DEFAULT_LISTEN = ("127.0.0.1", 3128)
_UNREACHABLE = (
    b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 62\r\n\r\n"
    b"velocity egress bridge: the egress proxy is not reachable now\n"
)


class Bridge:
    def __init__(self, listener: socket.socket, target: str) -> None:
        self._listener = listener
        self._target = target

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    def serve(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._carry, args=(client,), name="egress-bridge", daemon=True).start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()

    def _carry(self, client: socket.socket) -> None:
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with client, upstream:
            try:
                upstream.connect(self._target)
            except OSError:
                with contextlib.suppress(OSError):
                    client.sendall(_UNREACHABLE)
                return
            back = threading.Thread(target=_copy, args=(upstream, client), name="egress-bridge", daemon=True)
            back.start()
            _copy(client, upstream)
            back.join()


def _copy(source: socket.socket, destination: socket.socket) -> None:
    """Until end of stream (then half-close), or until either side fails (then end both)."""
    try:
        while data := source.recv(65536):
            destination.sendall(data)
        destination.shutdown(socket.SHUT_WR)
    except OSError:
        for side in (source, destination):
            with contextlib.suppress(OSError):
                side.shutdown(socket.SHUT_RDWR)


def start_bridge(env: Mapping[str, str], logs: LogBuffer) -> Bridge | None:
    """Listen and serve in a daemon thread when the provider asked for it; a failure is logged and the
    preview goes on (its installs then fail with the reason in their own output)."""
    target = env.get("AGENT_EGRESS_SOCKET", "").strip()
    if not target:
        return None
    listen = env.get("AGENT_EGRESS_LISTEN", "").strip()
    host, _, port = listen.rpartition(":") if listen else (DEFAULT_LISTEN[0], "", str(DEFAULT_LISTEN[1]))
    try:
        listener = socket.create_server((host, int(port)), backlog=128)
    except (OSError, ValueError) as exc:
        logs.agent(f"egress bridge: cannot listen on {host}:{port}: {exc}")
        return None
    bridge = Bridge(listener, target)
    threading.Thread(target=bridge.serve, name="egress-bridge", daemon=True).start()
    return bridge
