"""The agent's egress bridge: loopback TCP in the sandbox, carried unchanged to the proxy's unix socket."""

from __future__ import annotations

import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from velocity.agent.egress_bridge import Bridge, start_bridge
from velocity.agent.logs import LogBuffer


@pytest.fixture
def proxy_socket() -> Iterator[Path]:
    """A unix-socket server standing in for the egress proxy: it echoes, then half-closes on EOF."""
    directory = Path(tempfile.mkdtemp(prefix="vp-br-"))
    path = directory / "proxy.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()

    def echo() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)
                conn.shutdown(socket.SHUT_WR)

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    yield path
    server.shutdown(socket.SHUT_RDWR)
    server.close()
    thread.join(5)
    path.unlink()
    directory.rmdir()


def started(env: dict[str, str]) -> tuple[Bridge, LogBuffer]:
    logs = LogBuffer(echo=None)
    bridge = start_bridge(env, logs)
    assert bridge is not None, logs.tail(5)
    return bridge, logs


def test_bytes_cross_the_bridge_both_ways_and_a_half_close_passes_on(proxy_socket: Path) -> None:
    """What a client writes reaches the proxy; its answer comes back; EOF travels as EOF."""
    bridge, _ = started({"AGENT_EGRESS_SOCKET": str(proxy_socket), "AGENT_EGRESS_LISTEN": "127.0.0.1:0"})
    try:
        with socket.create_connection(bridge.address, timeout=5) as client:
            client.sendall(b"CONNECT registry.npmjs.org:443 HTTP/1.1\r\n\r\n")
            client.shutdown(socket.SHUT_WR)
            received = b""
            while data := client.recv(65536):
                received += data
        assert received == b"CONNECT registry.npmjs.org:443 HTTP/1.1\r\n\r\n"
    finally:
        bridge.close()


def test_without_the_proxy_a_client_gets_a_502_saying_so(tmp_path: Path) -> None:
    """A missing proxy socket is a clear 502, not a hang or a reset."""
    bridge, _ = started(
        {"AGENT_EGRESS_SOCKET": str(tmp_path / "absent.sock"), "AGENT_EGRESS_LISTEN": "127.0.0.1:0"}
    )
    try:
        with socket.create_connection(bridge.address, timeout=5) as client:
            answer = client.recv(65536)
        assert answer.startswith(b"HTTP/1.1 502")
        assert b"egress proxy is not reachable" in answer
    finally:
        bridge.close()


def test_no_bridge_starts_without_an_egress_socket() -> None:
    """Outside a sandbox with a proxy (Fly today, tests) the agent opens no port for it."""
    assert start_bridge({}, LogBuffer(echo=None)) is None


def test_a_bridge_that_cannot_listen_says_why_and_the_agent_goes_on(proxy_socket: Path) -> None:
    """A taken port is logged; start returns no bridge rather than stopping the agent."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        logs = LogBuffer(echo=None)
        bridge = start_bridge(
            {"AGENT_EGRESS_SOCKET": str(proxy_socket), "AGENT_EGRESS_LISTEN": f"127.0.0.1:{port}"}, logs
        )
    assert bridge is None
    assert any(f"egress bridge: cannot listen on 127.0.0.1:{port}" in entry.line for entry in logs.tail(5))
