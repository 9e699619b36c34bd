"""Test-side clients of the hub: the official Python and JS clients, and a raw websocket for bad frames.

Each records what it sees as plain dicts in an ``EventLog``; tests wait for the event they expect with
a deadline instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from realtime.types import RealtimeChannelConfig
from websockets.asyncio.client import ClientConnection, connect

from realtime import AsyncRealtimeClient, RealtimeSubscribeStates

JS_DIR = Path(__file__).parent / "js"
Event = dict[str, Any]


class EventLog:
    """Events in arrival order; ``expect`` consumes the first one matching, waiting up to a deadline."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.events: list[Event] = []
        self._changed = asyncio.Event()
        self._consumed: set[int] = set()

    def add(self, event: Event) -> None:
        self.events.append(event)
        self._changed.set()

    def _find(self, predicate: Callable[[Event], bool]) -> Event | None:
        for index, event in enumerate(self.events):
            if index not in self._consumed and predicate(event):
                self._consumed.add(index)
                return event
        return None

    async def expect(self, predicate: Callable[[Event], bool], within: float = 5.0) -> Event:
        try:
            async with asyncio.timeout(within):
                while (found := self._find(predicate)) is None:
                    self._changed.clear()
                    await self._changed.wait()
                return found
        except TimeoutError:
            raise AssertionError(f"{self.name}: no matching event in {within} s; saw {self.events}") from None

    def matching(self, predicate: Callable[[Event], bool]) -> list[Event]:
        return [event for event in self.events if predicate(event)]


async def eventually(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Poll a condition of the hub's state (which has no event to wait on) until it holds, or fail."""
    try:
        async with asyncio.timeout(within):
            while not condition():  # noqa: ASYNC110 - polling a plain attribute, not awaiting an event
                await asyncio.sleep(0.002)
    except TimeoutError:
        raise AssertionError(f"condition still false after {within} s") from None


def kind(name: str, **fields: Any) -> Callable[[Event], bool]:
    return lambda event: event.get("type") == name and all(event.get(k) == v for k, v in fields.items())


class PyClient:
    """The official Python client (vsn 1.0.0), one channel per topic."""

    def __init__(self, url: str, token: str) -> None:
        self.client = AsyncRealtimeClient(url, token, auto_reconnect=False, max_retries=1)
        self.log = EventLog("python")
        self.channels: dict[str, Any] = {}

    async def subscribe(
        self, topic: str, *, echo_self: bool = False, ack: bool = False, presence_key: str | None = None
    ) -> Any:
        config: RealtimeChannelConfig = {
            "broadcast": {"self": echo_self, "ack": ack},
            "presence": {"key": presence_key or "", "enabled": presence_key is not None},
            "private": False,
        }
        channel = self.client.channel(topic, {"config": config})
        channel.on_broadcast(
            "*",
            lambda m: self.log.add(
                {
                    "type": "broadcast",
                    "topic": topic,
                    "event": m["event"],
                    "payload": m["payload"],
                    "at": time.time(),
                }
            ),
        )
        channel.on_system(lambda p: self.log.add({"type": "system", "topic": topic, "payload": dict(p)}))
        if presence_key is not None:
            channel.on_presence_sync(
                lambda: self.log.add({"type": "presence", "topic": topic, "state": channel.presence_state()})
            )

        def on_status(status: RealtimeSubscribeStates, error: Exception | None) -> None:
            self.log.add(
                {"type": "status", "topic": topic, "status": status.value, "error": str(error or "")}
            )

        await channel.subscribe(on_status)
        self.channels[topic] = channel
        return channel

    async def close(self) -> None:
        channels = {*self.client.channels.values(), *self.channels.values()}
        with contextlib.suppress(Exception):
            await self.client.remove_all_channels()
        await self.client.close()
        # The client leaves a 10 s timeout task behind for every push still waiting for a reply.
        for channel in channels:
            for push in [channel.join_push, *channel.messages_waiting_for_ack.values()]:
                push.destroy()
            channel.rejoin_timer.reset()


class JsClient:
    """``@supabase/realtime-js`` in a node process, driven by ``js/driver.mjs`` over stdin/stdout."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.log = EventLog("js")
        self._ids = itertools.count(1)
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, url: str, apikey: str, *, vsn: str = "2.0.0") -> JsClient:
        process = await asyncio.create_subprocess_exec(
            "node", str(JS_DIR / "driver.mjs"), url, apikey, vsn,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            cwd=JS_DIR, env={**os.environ, "NODE_NO_WARNINGS": "1"},
        )  # fmt: skip
        client = cls(process)
        await client.log.expect(kind("ready"), within=15)
        return client

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            self.log.add(json.loads(line))

    async def command(self, op: str, within: float = 10.0, **args: Any) -> Any:
        assert self.process.stdin is not None
        command_id = next(self._ids)
        self.process.stdin.write((json.dumps({"id": command_id, "op": op, **args}) + "\n").encode())
        await self.process.stdin.drain()
        result = await self.log.expect(kind("result", id=command_id), within=within)
        if "error" in result:
            raise AssertionError(f"js {op} failed: {result['error']}")
        return result.get("value")

    async def close(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(Exception):
                await self.command("exit", within=5)
            try:
                async with asyncio.timeout(5):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


class RawClient:
    """A bare websocket speaking frames by hand, for what the official clients never send."""

    def __init__(self, socket: ClientConnection, vsn: str) -> None:
        self.socket = socket
        self.vsn = vsn
        self._refs = itertools.count(1)

    @classmethod
    async def connect(cls, ws_url: str, apikey: str, *, vsn: str = "1.0.0", **options: Any) -> RawClient:
        socket = await connect(f"{ws_url}?apikey={apikey}&vsn={vsn}", **options)
        return cls(socket, vsn)

    def ref(self) -> str:
        return str(next(self._refs))

    async def push(
        self, topic: str, event: str, payload: Any, *, ref: str | None = None, join_ref: str | None = None
    ) -> str:
        ref = ref or self.ref()
        if self.vsn == "2.0.0":
            await self.socket.send(json.dumps([join_ref, ref, topic, event, payload]))
        else:
            message = {"topic": topic, "event": event, "payload": payload, "ref": ref, "join_ref": join_ref}
            await self.socket.send(json.dumps(message))
        return ref

    async def join(self, topic: str, config: dict[str, Any] | None = None, **payload: Any) -> Event:
        ref = await self.push(topic, "phx_join", {"config": config or {}, **payload})
        return await self.reply(ref)

    async def recv(self, within: float = 5.0) -> Any:
        """The next frame: a dict (V1, or V2 arrays mapped to the same keys) or raw bytes."""
        async with asyncio.timeout(within):
            data = await self.socket.recv()
        if isinstance(data, bytes):
            return data
        message = json.loads(data)
        if isinstance(message, list):
            join_ref, ref, topic, event, payload = message
            return {"join_ref": join_ref, "ref": ref, "topic": topic, "event": event, "payload": payload}
        return message

    async def next(self, predicate: Callable[[Any], bool], within: float = 5.0) -> Any:
        async with asyncio.timeout(within):
            while not predicate(message := await self.recv(within)):
                pass
            return message

    async def reply(self, ref: str, within: float = 5.0) -> Event:
        message: Event = await self.next(
            lambda m: isinstance(m, dict) and m.get("event") == "phx_reply" and m.get("ref") == ref, within
        )
        return message

    async def close(self) -> None:
        await self.socket.close()
