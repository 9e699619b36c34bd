"""The hot-reload check on servers that are not Vite: nothing is called broken that never had it."""

from __future__ import annotations

import asyncio

from velocity.agent import hmr


async def test_a_server_that_answers_every_path_is_not_taken_for_vite() -> None:
    """A plain server answers /@vite/client with its own page: the state is unknown, not broken."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        state, detail = await hmr.check(server.sockets[0].getsockname()[1], next_js=False)
    finally:
        server.close()
        await server.wait_closed()
    assert state == "unknown" and detail is not None and "not Vite or Next.js" in detail


async def test_next_js_without_its_hot_reload_endpoint_is_broken() -> None:
    """Next.js always has /_next/webpack-hmr: a refused upgrade there is a broken hot reload."""

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    try:
        state, detail = await hmr.check(server.sockets[0].getsockname()[1], next_js=True)
    finally:
        server.close()
        await server.wait_closed()
    assert state == "broken" and detail == "Next.js's hot-reload websocket was refused: HTTP 404"
