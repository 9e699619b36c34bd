"""Our TCP listeners hand every connection to asyncio with TCP_NODELAY: a keep-alive response
written in two parts (headers, then body) is not held 40 ms by Nagle waiting for a delayed ACK, on
the agent's port that the router calls for every module, nor on the orchestrator's."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import pytest

from velocity.agent.server import _listen
from velocity.server import bind
from velocity.settings import Settings


def agent_listener() -> socket.socket:
    return _listen(None, 0)


def orchestrator_listener() -> socket.socket:
    sock, _ = bind(Settings(velocity_host="127.0.0.1", velocity_port=0, _env_file=None))  # type: ignore[call-arg]
    return sock


@pytest.mark.parametrize("listener", [agent_listener, orchestrator_listener], ids=["agent", "orchestrator"])
async def test_accepted_connections_do_not_wait_for_delayed_acks(
    listener: Callable[[], socket.socket],
) -> None:
    sock = listener()
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.listen(8)
    nodelay: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def accepted(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nodelay.set_result(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(accepted, sock=sock)
    port = sock.getsockname()[1]
    try:
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(nodelay, 5) != 0
        writer.close()
        await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()
