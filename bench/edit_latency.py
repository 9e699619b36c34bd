"""Edit-to-screen latency: an edit broadcast from supabase-js until its text is in the page's DOM,
beside the floor measured in the same run, the same file written directly into the sandbox's workspace.

One orchestrator, one preview of the example (React + Vite) in a local sandbox, one headless Chromium
on the preview's URL. A MutationObserver in the page stamps the moment each new heading appears with
``performance.timeOrigin + performance.now()``; the sender stamps its own send the same way (the
node driver's ``sent_at``, read back from the hub), and the floor's writer with the wall clock, all on
this host. Edits alternate between the two paths, so both see the same warm Vite and browser.

    .venv/bin/python -m bench.edit_latency [--edits 50]

Writes bench/results/edit_latency.json. The issue's target: our median <= floor + 30 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.stats import summary
from tests.e2e.browser import chromium
from tests.e2e.harness import EXAMPLE, live_orchestrator, warm_npm_cache
from tests.realtime.realtime_clients import JsClient
from velocity.realtime.contract import preview_topic

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "edit_latency.json"
TARGET_MS = 30.0
SETTLE_SECONDS = 0.15
HEADING = "Hello from Velocity"

OBSERVE = """() => {
  window.__seen = {}
  const stamp = () => {
    const text = document.querySelector('h1')?.textContent
    if (text && !(text in window.__seen)) window.__seen[text] = performance.timeOrigin + performance.now()
  }
  new MutationObserver(stamp).observe(document.body, { subtree: true, childList: true, characterData: true })
  stamp()
}"""


async def measure(edits: int, npm_cache: Path) -> dict[str, Any]:
    source = (EXAMPLE / "src" / "App.jsx").read_text()
    async with live_orchestrator(npm_cache=npm_cache) as live:
        await live.import_project(EXAMPLE, "example")
        preview = await live.create("example")
        ready = await live.settled(preview["id"], timeout=180)
        assert ready["state"] == "ready", ready["failure_reason"]
        app = live.settings.data_dir / "sandboxes" / ready["machine_id"] / "workspace" / "src" / "App.jsx"
        topic = preview_topic("example")
        hub = live.running.runtime.hub
        assert hub is not None
        sent: dict[str, float] = {}  # heading -> sender's stamp, as the hub saw the broadcast
        at_hub: dict[str, float] = {}  # heading -> when the hub fanned it out

        def on_broadcast(event: str, payload: Any) -> None:
            if event == "file_changed" and isinstance(payload, dict) and "sent_at" in payload:
                heading = payload["content"].split("<h1>")[1].split("</h1>")[0]
                sent[heading], at_hub[heading] = payload["sent_at"], time.time() * 1000

        hub.listen(topic, on_broadcast)
        key = live.settings.supabase_anon_key
        assert key is not None
        js = await JsClient.start(f"ws://127.0.0.1:{live.port}/realtime/v1", key.get_secret_value())
        try:
            await js.command("setAuth", token=live.token)
            config = {"private": True, "broadcast": {"ack": True}, "presence": {"key": "editor:bench"}}
            await js.command("subscribe", topic=topic, config=config)
            await js.command("track", topic=topic, meta={"role": "editor", "contract": 1})
            await js.log.expect(lambda e: e.get("type") == "broadcast" and e["event"] == "status", within=30)
            async with chromium() as browser:
                page = await browser.new_page()
                await page.goto(ready["access_url"])  # signs the browser in, then lands on the app
                await page.locator("h1").filter(has_text=HEADING).wait_for(timeout=30_000)
                await page.evaluate(OBSERVE)

                async def shown(heading: str) -> float:
                    await page.wait_for_function("h => h in window.__seen", arg=heading, timeout=15_000)
                    stamp: float = await page.evaluate("h => window.__seen[h]", heading)
                    # Vite's watcher ignores a change within 50 ms of the previous one to the same
                    # file (see velocity.agent.pacing): let each edit settle so neither path meets it.
                    await asyncio.sleep(SETTLE_SECONDS)
                    return stamp

                ours: list[float] = []
                floor: list[float] = []
                to_hub: list[float] = []
                for i in range(-2, edits):  # two of each first to warm up, not counted
                    heading = f"Broadcast {i}"
                    payload = {
                        "path": "src/App.jsx",
                        "content": source.replace(HEADING, heading),
                        "encoding": "utf8",
                    }
                    await js.command("send", topic=topic, event="file_changed", payload=payload, stamp=True)
                    dom = await shown(heading)
                    if i >= 0:
                        ours.append(dom - sent[heading])
                        to_hub.append(at_hub[heading] - sent[heading])

                    heading = f"Direct {i}"
                    temporary = app.with_name(f".App.jsx.{i}.bench")
                    temporary.write_text(source.replace(HEADING, heading))
                    written = time.time() * 1000
                    os.rename(temporary, app)  # as the agent writes: whole, by rename
                    dom = await shown(heading)
                    if i >= 0:
                        floor.append(dom - written)
        finally:
            await js.close()
    result = {
        "edits": edits,
        "ours_ms": summary(ours),
        "floor_ms": summary(floor),
        "sent_to_hub_ms": summary(to_hub),
    }
    result["overhead_median_ms"] = round(result["ours_ms"]["median"] - result["floor_ms"]["median"], 2)
    result["target"] = f"ours median <= floor median + {TARGET_MS:.0f} ms"
    result["target_met"] = result["overhead_median_ms"] <= TARGET_MS
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--edits", type=int, default=50)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    npm_cache = Path(tempfile.mkdtemp(prefix="vpe-npm-"))
    try:
        warm_npm_cache(npm_cache)
        result = asyncio.run(measure(args.edits, npm_cache))
    finally:
        shutil.rmtree(npm_cache, ignore_errors=True)
        shutil.rmtree(npm_cache.with_name(npm_cache.name + "-modules"), ignore_errors=True)
    result["machine"] = {"cpus": len(os.sched_getaffinity(0)), "python": platform.python_version()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    ours, floor = result["ours_ms"], result["floor_ms"]
    print(
        f"edit to screen over {args.edits} edits: ours median {ours['median']:.1f} ms (p90 {ours['p90']:.1f}), "
        f"floor median {floor['median']:.1f} ms (p90 {floor['p90']:.1f}); "
        f"overhead {result['overhead_median_ms']:+.1f} ms (target <= +{TARGET_MS:.0f}: "
        f"{'met' if result['target_met'] else 'missed'})"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
