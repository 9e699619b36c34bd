"""Is the dev server answering? And which port may it take?"""

from __future__ import annotations

import asyncio
import contextlib
import socket

PROBE_TIMEOUT_SECONDS = 5.0


async def answers(port: int) -> bool:
    """True once ``GET /`` on 127.0.0.1:port gets any HTTP status line back, errors included."""
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(
                    f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
                )
                await writer.drain()
                return (await reader.readline()).startswith(b"HTTP/")
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError):
        return False


def free_port() -> int:
    """A port nobody listens on right now. Another process could take it before the dev server does;
    the dev server then fails to bind (``--strictPort``) and its restart picks again."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
