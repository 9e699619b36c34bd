"""How long a broadcast takes through the hub on loopback, between the official clients.

One-way times compare the sender's wall clock with the receiver's (the same host, so the same clock);
each message is sent after the previous one arrived, so this is latency without queueing. The hub, the
Python client and the test share one event loop, so these are upper bounds for a hub in its own
process. The numbers print with ``pytest -s``; the assertions only catch a hub gone badly slow.
"""

from __future__ import annotations

import statistics
import time

from tests.realtime.hub_server import TOPIC, Served
from tests.realtime.realtime_clients import kind

SAMPLES = 100


def summary(name: str, millis: list[float]) -> str:
    ordered = sorted(millis)
    p90 = ordered[int(len(ordered) * 0.9) - 1]
    return f"{name}: n={len(ordered)} median {statistics.median(ordered):.2f} ms, p90 {p90:.2f} ms, max {ordered[-1]:.2f} ms"


async def test_broadcast_latency_between_the_python_and_js_clients(served: Served, node: str) -> None:
    """Python -> JS (text in, text array out), JS -> Python (binary kind 3 in, JSON out), and the round trip."""
    js = await served.js()
    await js.command("subscribe", topic=TOPIC, echo={"from": "ping", "to": "pong"})
    py = await served.python()
    channel = await py.subscribe(TOPIC)

    to_js, to_py, round_trip = [], [], []
    for seq in range(SAMPLES):
        sent = time.time() * 1000
        await channel.send_broadcast(
            "file_changed", {"seq": seq, "path": "src/App.tsx", "content": "x" * 200}
        )
        received = await js.log.expect(kind("broadcast", event="file_changed"))
        assert received["payload"]["seq"] == seq
        to_js.append(received["at"] - sent)

        await js.command("send", topic=TOPIC, event="status", payload={"seq": seq}, stamp=True)
        status = await py.log.expect(kind("broadcast", event="status"))
        to_py.append(status["at"] * 1000 - status["payload"]["sent_at"])

        sent = time.time() * 1000
        await channel.send_broadcast("ping", {"seq": seq})
        pong = await py.log.expect(kind("broadcast", event="pong"))
        round_trip.append(pong["at"] * 1000 - sent)

    lines = [
        summary("python -> js", to_js),
        summary("js -> python", to_py),
        summary("round trip", round_trip),
    ]
    print("\nrealtime hub latency on loopback\n  " + "\n  ".join(lines))
    assert statistics.median(to_js) < 20
    assert statistics.median(to_py) < 20
    assert statistics.median(round_trip) < 40
