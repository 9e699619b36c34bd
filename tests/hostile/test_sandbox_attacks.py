"""Attacks from user code inside a real sandbox on what the host shares with it: the agent's socket and
the npm cache. Two users, one orchestrator; the attacker's dev server carries out each attack on
request (tests/e2e/projects/intruder) and the test checks that no harm reached the other user.
Each attack is a row of docs/security.md's table."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from tests.e2e.harness import PROJECTS, live_orchestrator
from velocity.providers.local.provider import agent_socket

pytestmark = pytest.mark.e2e

INTRUDER = PROJECTS / "intruder"


async def test_a_link_planted_for_the_agent_socket_does_not_hand_over_another_preview(
    npm_cache: Path,
) -> None:
    """The attacker replaces every place its agent's socket could be with a link to the victim's socket;
    the router still reaches the attacker's own agent, on fresh connections too, and never the victim."""
    async with live_orchestrator(npm_cache=npm_cache) as victim, victim.as_user("mallory") as mallory:
        theirs, mine = await asyncio.gather(
            victim.started(INTRUDER, "victims-app"), mallory.started(INTRUDER, "mallorys-app")
        )
        victim_socket = agent_socket(victim.settings.data_dir / "sandboxes" / theirs["machine_id"])
        assert victim_socket.exists()

        planted = await mallory.ask(mine["id"], "/plant-socket", target=str(victim_socket))
        assert planted["planted"]["/run/velocity/agent.sock"]["ok"], planted

        # Concurrent requests open new connections to the agent, each one dialled after the plant.
        answers = await asyncio.gather(*(mallory.ask(mine["id"], "/whoami") for _ in range(8)))
        assert {a["project"] for a in answers} == {"mallorys-app"}
        assert (await victim.ask(theirs["id"], "/whoami"))["project"] == "victims-app"
        # The one socket a sandbox sees is its egress proxy's, on a read-only bind it cannot replace.
        assert planted["found"] == ["/run/egress/proxy.sock"]
        assert planted["planted"]["/run/egress/proxy.sock"] == {"ok": False, "error": "EROFS"}


async def test_a_users_writes_to_the_npm_cache_never_reach_another_users_sandbox(npm_cache: Path) -> None:
    """Each user has an npm cache of their own: what one sandbox plants there (a package entry npm
    would trust) is not in another user's cache, and one user's cached packages are not readable by
    another's code."""
    async with live_orchestrator(npm_cache=npm_cache) as victim, victim.as_user("mallory") as mallory:
        mine = await mallory.started(INTRUDER, "mallorys-app")
        plant = "_cacache/index-v5/00/planted-by-mallory"
        assert (await mallory.ask(mine["id"], "/write", path=f"/cache/npm/{plant}", data="{}"))["ok"]
        seen_by_mallory = (await mallory.ask(mine["id"], "/list", path="/cache/npm"))["names"]
        assert not any(name.startswith("_cacache/content-v2/") for name in seen_by_mallory), (
            "mallory's sandbox sees packages it never fetched: another user's cache"
        )

        theirs = await victim.started(INTRUDER, "victims-app")
        seen_by_victim = (await victim.ask(theirs["id"], "/list", path="/cache/npm"))["names"]
        assert plant not in seen_by_victim
        assert any(name.startswith("_cacache/content-v2/") for name in seen_by_victim), (
            "the victim's sandbox should see its own warm cache"
        )
        # And on the host, the plant is only in mallory's directory.
        assert len(list(npm_cache.glob(f"*/{plant}"))) == 1


async def test_what_the_host_keeps_of_a_preview_is_the_orchestrator_s_alone(npm_cache: Path) -> None:
    """The database and the users' snapshots are the orchestrator's only (0600 in 0700 directories);
    inside the sandbox, pid 1's command line names no host path (bubblewrap reads its options from
    a descriptor)."""
    async with live_orchestrator(npm_cache=npm_cache) as live:
        ready = await live.started(INTRUDER, "my-app")
        data = live.settings.data_dir
        database = data / "velocity.db"
        assert database.exists()
        assert stat.S_IMODE(database.stat().st_mode) == 0o600
        snapshot = next((data / "projects").rglob("snapshot.tar.gz"))
        assert stat.S_IMODE(snapshot.stat().st_mode) == 0o600
        assert stat.S_IMODE((data / "projects").stat().st_mode) == 0o700

        cmdline = await live.ask(ready["id"], "/read", path="/proc/1/cmdline")
        assert cmdline["ok"] and "--args" in cmdline["text"], cmdline
        assert str(data) not in cmdline["text"]
        assert "--bind" not in cmdline["text"]


async def test_a_setuid_file_a_sandbox_writes_is_inert_and_out_of_other_users_reach(npm_cache: Path) -> None:
    """Every path a sandbox writes is mounted nosuid,nodev inside it, and on the host sits below a
    directory only the orchestrator's user can enter, so no other host user can run what it wrote."""
    async with live_orchestrator(npm_cache=npm_cache) as live:
        ready = await live.started(INTRUDER, "my-app")
        mounts = (await live.ask(ready["id"], "/read", path="/proc/self/mountinfo"))["text"]
        for target in ("/workspace", "/cache/npm"):
            options = next(line.split()[5] for line in mounts.splitlines() if line.split()[4] == target)
            assert {"nosuid", "nodev"} <= set(options.split(",")), (target, options)

        planted = {"/workspace/sbin/root-shell": None, "/cache/npm/_cacache/root-shell": None}
        for inside in planted:
            assert (await live.ask(ready["id"], "/setuid", path=inside))["ok"]
        home = live.settings.data_dir / "sandboxes" / ready["machine_id"]
        on_host = [home / "workspace/sbin/root-shell", *npm_cache.glob("*/_cacache/root-shell")]
        assert len(on_host) == 2
        for path in on_host:
            assert path.stat().st_mode & stat.S_ISUID, "the sandbox did write a setuid file"
            guards = [
                d for d in path.parents if d.stat().st_uid == os.geteuid() and not d.stat().st_mode & 0o001
            ]
            assert guards and guards[0] in (home, *npm_cache.iterdir(), npm_cache), (path, guards)


async def test_the_realtime_hub_is_no_way_around_the_egress_allowlist(npm_cache: Path) -> None:
    """User code holds the public anon key, and the egress proxy lets it reach the hub. It still may
    not broadcast on an open topic (which any holder of the anon key outside could read) nor on
    another preview's channel; nothing it sends arrives."""
    async with live_orchestrator(npm_cache=npm_cache) as live:
        ready = await live.started(INTRUDER, "my-app")
        hub = live.running.runtime.hub
        assert hub is not None
        heard: list[object] = []
        for topic in ("room:exfil", "preview:someone-else", "preview:my-app"):
            hub.listen(topic, lambda event, payload: heard.append((event, payload)))
        for topic in ("room:exfil", "preview:someone-else"):
            sent = await live.ask(ready["id"], "/broadcast", topic=topic)
            assert sent["status"] == 403, sent
            assert "only its own channel" in sent["body"]
        own = await live.ask(ready["id"], "/broadcast", topic="preview:my-app")
        assert own["status"] == 403, "the anon key alone opens no preview channel"
        assert heard == []
        # From outside a preview the same open topic works, as on Supabase.
        anon = live.settings.supabase_anon_key
        assert anon is not None
        outside = await live.api.post(
            "/realtime/v1/api/broadcast",
            json={"messages": [{"topic": "room:exfil", "event": "hello", "payload": {}}]},
            headers={"apikey": anon.get_secret_value(), "authorization": ""},
        )
        assert outside.status_code == 202, outside.text
        assert heard and heard[0][0] == "hello"
