"""Attacks from user code inside a real sandbox on what the host shares with it: the agent's socket and
the npm cache. Two users, one orchestrator; the attacker's dev server carries out each attack on
request (tests/e2e/projects/intruder) and the test checks that no harm reached the other user.
Each attack is a row of docs/security.md's table."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import EXAMPLE, PROJECTS, Live, live_orchestrator, modules_cache
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
        # Some places are the project's to write (the workspace); where they are not, the plant fails.
        outcomes = planted["planted"]
        assert outcomes["/workspace/agent.sock"]["ok"], planted
        assert all(o["ok"] or o["error"] in ("EACCES", "EROFS") for o in outcomes.values()), planted

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
    """The database, which holds the users' snapshots, is the orchestrator's only (0600; no snapshot
    is a file of its own); inside the sandbox, pid 1's command line names no host path (bubblewrap reads its options from
    a descriptor)."""
    async with live_orchestrator(npm_cache=npm_cache) as live:
        ready = await live.started(INTRUDER, "my-app")
        data = live.settings.data_dir
        database = data / "velocity.db"
        assert database.exists()
        assert stat.S_IMODE(database.stat().st_mode) == 0o600
        assert list(data.rglob("snapshot.tar.gz")) == []

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
        heard: list[tuple[str, object]] = []

        def hear(event: str, payload: object) -> None:
            # The agent's own reports go on on its channel (a hot-reload check, say): not the attack.
            if event not in ("status", "log"):
                heard.append((event, payload))

        for topic in ("room:exfil", "preview:someone-else", "preview:my-app"):
            hub.listen(topic, hear)
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


# Tries each call a dev server never needs, from user code, and names the error each one got.
SYSCALLS = r"""
import ctypes, errno, json, os, platform
libc = ctypes.CDLL(None, use_errno=True)
number = {"x86_64": {"keyctl": 250, "bpf": 321, "clone3": 435},
          "aarch64": {"keyctl": 219, "bpf": 280, "clone3": 435}}[platform.machine()]
def attempt(call):
    ctypes.set_errno(0)
    return "allowed" if call() >= 0 else errno.errorcode[ctypes.get_errno()]
def fork():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    return os.waitpid(pid, 0)[1]
print(json.dumps({
    "a new user namespace": attempt(lambda: libc.unshare(0x10000000)),
    "a new mount namespace": attempt(lambda: libc.unshare(0x00020000)),
    "a mount": attempt(lambda: libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)),
    "ptrace of pid 1": attempt(lambda: libc.ptrace(16, 1, 0, 0)),
    "keyctl": attempt(lambda: libc.syscall(number["keyctl"], 0, 0, 0, 0, 0)),
    "bpf": attempt(lambda: libc.syscall(number["bpf"], 0, 0, 0)),
    "clone3": attempt(lambda: libc.syscall(number["clone3"], 0, 0)),
    "fork": attempt(fork),
}))
"""


async def test_user_code_cannot_make_namespaces_trace_or_reach_kernel_facilities(npm_cache: Path) -> None:
    """A seccomp filter refuses what a dev server never needs (new namespaces, ptrace, keyrings, BPF,
    mounts) while the preview itself (npm, the dev server, its children) works as ever."""
    async with live_orchestrator(npm_cache=npm_cache) as live:
        ready = await live.started(INTRUDER, "my-app")
        status = (await live.ask(ready["id"], "/read", path="/proc/self/status"))["text"]
        assert "Seccomp:\t2" in status, "user code runs under a seccomp filter"

        probe = await live.ask(ready["id"], "/exec", cmd="/usr/bin/python3", arg=["-c", SYSCALLS])
        assert probe["status"] == 0, probe
        assert json.loads(probe["stdout"]) == {
            "a new user namespace": "EPERM",
            "a new mount namespace": "EPERM",
            "a mount": "EPERM",
            "ptrace of pid 1": "EPERM",
            "keyctl": "EPERM",
            "bpf": "EPERM",
            "clone3": "ENOSYS",
            "fork": "allowed",
        }
        nested = await live.ask(
            ready["id"], "/exec", cmd="unshare", arg=["--user", "--map-root-user", "true"]
        )
        assert nested["status"] != 0 and "Operation not permitted" in nested["stderr"], nested


async def test_a_sandbox_fills_only_its_own_disks_and_its_console_starts_over(npm_cache: Path) -> None:
    """The workspace is a disk of CONTAINER_DISK_MB and the user's npm cache one of LOCAL_NPM_CACHE_MB:
    writing past either fails with ENOSPC inside the sandbox, and on the host each is a sparse file that
    holds no more than its size. A dev server printing without end leaves a console of a few MiB."""
    async with (
        live_orchestrator(npm_cache=npm_cache, container_disk_mb=128, local_npm_cache_mb=96) as live,
        live.as_user("filler") as filler,
    ):
        ready = await filler.started(INTRUDER, "big-app")
        home = live.settings.data_dir / "sandboxes" / ready["machine_id"]

        workspace = await filler.ask(ready["id"], "/fill", path="/workspace/big.bin", mb=400)
        assert workspace["error"] == "ENOSPC" and 100 <= workspace["written"] < 128, workspace
        cache = await filler.ask(ready["id"], "/fill", path="/cache/npm/big.bin", mb=400)
        assert cache["error"] == "ENOSPC" and 70 <= cache["written"] < 96, cache
        (image,) = [i for i in npm_cache.glob("*.img") if (i.with_suffix("") / "big.bin").exists()]
        for disk, size_mb in ((home / "workspace.img", 128), (image, 96)):
            assert disk.stat().st_blocks * 512 <= size_mb << 20, disk

        await filler.ask(ready["id"], "/shout", mb=12)
        console = home / "console.log"
        assert console.stat().st_size <= (4 << 20) + (256 << 10), console.stat().st_size
        assert console.read_text().startswith("agent: the console passed"), "it started over"

        # The host's own files are untouched by all of it; the disks go with the machine.
        deleted = await filler.api.delete(f"/v1/previews/{ready['id']}")
        assert deleted.json()["state"] == "stopped"
        assert not home.exists()
        assert not os.path.ismount(image.with_suffix("")), (
            "the user's cache is unmounted with their last sandbox"
        )


# Looks for the agent's credentials wherever a process of the sandbox may show them to another.
CREDENTIAL_HUNT = r"""
import json, os, sys
wanted = [w.encode() for w in sys.argv[1:]]
found, read = [], 0
for pid in filter(str.isdigit, os.listdir("/proc")):
    if int(pid) == os.getpid():
        continue
    for part in ("environ", "cmdline"):
        try:
            data = open(f"/proc/{pid}/{part}", "rb").read()
        except OSError:
            continue
        read += 1
        found += [f"{pid}/{part}" for w in wanted if w in data]
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        continue
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith(("/memfd:", "/")) and not target.startswith("/dev/"):
                data = open(f"/proc/{pid}/fd/{fd}", "rb").read(1 << 20)
                found += [f"{pid}/fd/{fd} ({target})" for w in wanted if w in data]
        except OSError:
            continue
agent = [
    pid for pid in filter(str.isdigit, os.listdir("/proc"))
    if open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[1:3] == [b"-m", b"velocity.agent"]
]
memory, signalled, agent_uids = {}, {}, []
for pid in agent:
    try:
        open(f"/proc/{pid}/mem", "rb").close()
        memory[pid] = "opened"
    except OSError as exc:
        memory[pid] = type(exc).__name__
    try:
        os.kill(int(pid), 0)
        signalled[pid] = "delivered"
    except OSError as exc:
        signalled[pid] = type(exc).__name__
    status = open(f"/proc/{pid}/status").read()
    agent_uids += [int(line.split()[1]) for line in status.splitlines() if line.startswith("Uid:")]
print(json.dumps({
    "found": found, "read": read, "agent_memory": memory, "signalled": signalled,
    "agent_uids": agent_uids, "my_uid": os.getuid(), "my_caps": open("/proc/self/status").read(),
}))
"""


async def test_user_code_finds_none_of_the_agent_s_credentials(npm_cache: Path) -> None:
    """The agent's token and origin secret reach it through a descriptor it reads and closes, not
    the environment every process of the sandbox starts from. The project's code runs as a uid of
    its own with no capabilities, so it can neither open the agent's memory or descriptors nor
    signal it (and the agent is not dumpable, which guards it where the two share a uid)."""
    async with live_orchestrator(npm_cache=npm_cache) as live:
        ready = await live.started(INTRUDER, "my-app")
        secret = live.running.runtime.issuer.origin_secret(ready["id"])
        hunt = await live.ask(
            ready["id"], "/exec", cmd="/usr/bin/python3",
            arg=["-c", CREDENTIAL_HUNT, "AGENT_TOKEN", "AGENT_ORIGIN_SECRET", secret],
        )  # fmt: skip
        assert hunt["status"] == 0, hunt
        result = json.loads(hunt["stdout"])
        assert result["read"] >= 4, "the hunt read the environments of the sandbox's processes"
        assert result["found"] == [], result["found"]
        assert list(result["agent_memory"].values()) == ["PermissionError"], result["agent_memory"]
        if os.geteuid() == 0:  # a sandbox started by root has two uids (unprivileged: one, mapped)
            settings = live.settings
            assert result["my_uid"] == settings.local_sandbox_uid
            assert result["agent_uids"] == [settings.local_agent_uid]
            assert list(result["signalled"].values()) == ["PermissionError"], result["signalled"]
            caps = {k: v for k, v in (line.split(":\t") for line in result["my_caps"].splitlines())}
            assert {caps[k] for k in ("CapInh", "CapPrm", "CapEff", "CapAmb")} == {"0" * 16}, caps
            assert caps["NoNewPrivs"] == "1"
        # The agent still holds them: the preview serves, through the origin check, and live sync.
        assert (await live.ask(ready["id"], "/whoami"))["project"] == "my-app"


# Appends a marker to react in the sandbox's node_modules and in the npm cache's tarball of react
# (rewritten as a valid gzip tarball, as an attacker who knows npm's cache layout would).
POISON = r"""
import io, json, os, sys, tarfile
marker = b"\nglobalThis.POISONED = 1;\n"
with open("/workspace/node_modules/react/index.js", "ab") as installed:
    installed.write(marker)
cached = sys.argv[1]
with tarfile.open(cached) as original:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as poisoned:
        for member in original.getmembers():
            data = original.extractfile(member).read() if member.isfile() else None
            if member.name == "package/index.js":
                data += marker
                member.size = len(data)
            poisoned.addfile(member, io.BytesIO(data) if data is not None else None)
os.chmod(cached, 0o644)
with open(cached, "wb") as content:
    content.write(out.getvalue())
print(json.dumps({"poisoned": cached}))
"""


def cached_tarball(lockfile: Path, package: str) -> str:
    """Where npm's cache (cacache) keeps ``package``'s tarball, named by the lockfile's integrity."""
    integrity = json.loads(lockfile.read_text())["packages"][f"node_modules/{package}"]["integrity"]
    algorithm, digest = integrity.split("-", 1)
    hexed = base64.b64decode(digest).hex()
    return f"/cache/npm/_cacache/content-v2/{algorithm}/{hexed[:2]}/{hexed[2:4]}/{hexed[4:]}"


async def test_what_a_preview_writes_into_its_packages_or_the_npm_cache_reaches_no_later_preview(
    npm_cache: Path, tmp_path: Path
) -> None:
    """A preview's code appends to react in its node_modules and in the owner's npm cache. Its tree
    no longer matches the agent's seal, so it is not kept; the owner's next preview installs react
    again from the cache, where npm refuses the altered tarball against the lockfile's integrity (the
    agent installs once more after npm drops it); another user's preview never sees that cache. No
    later preview runs the altered react, and the clean tree is kept again."""
    project = tmp_path / "poisoner"
    shutil.copytree(INTRUDER, project)
    for name in ("package.json", "package-lock.json"):
        shutil.copy(EXAMPLE / name, project / name)
    package = json.loads((project / "package.json").read_text())
    package["scripts"]["dev"] = "node probe.js"
    package.pop("type")  # the probe is CommonJS
    (project / "package.json").write_text(json.dumps(package))
    marker = "globalThis.POISONED"

    def react(live: Live, preview: dict[str, Any]) -> str:
        home = live.settings.data_dir / "sandboxes" / preview["machine_id"]
        return (home / "workspace" / "node_modules" / "react" / "index.js").read_text()

    async with live_orchestrator(npm_cache=npm_cache) as owner, owner.as_user("someone-else") as other:
        first = await owner.started(project, "poisoner")
        home = owner.settings.data_dir / "sandboxes" / first["machine_id"]
        kept = (
            modules_cache(npm_cache) / f"{json.loads((home / 'machine.json').read_text())['cache_key']}.img"
        )
        attack = await owner.ask(
            first["id"], "/exec", cmd="/usr/bin/python3",
            arg=["-c", POISON, cached_tarball(project / "package-lock.json", "react")],
        )  # fmt: skip
        assert attack["status"] == 0, attack["stderr"]
        assert marker in react(owner, first), "the attack did change the installed react"
        assert (await owner.api.delete(f"/v1/previews/{first['id']}")).json()["state"] == "stopped"
        assert not kept.exists(), "a tree changed after its install was sealed is not kept"

        again = await owner.started(project, "poisoner")
        assert marker not in react(owner, again)
        # Whether npm meets the altered tarball (and the agent installs once more) or fetches react
        # afresh depends on what else npm kept in its index; either way it installs the real react.

        theirs = await other.started(project, "theirs")
        assert marker not in react(other, theirs)

        assert (await owner.api.delete(f"/v1/previews/{again['id']}")).json()["state"] == "stopped"
        assert kept.exists(), "the clean install, unchanged since its seal, is kept for the owner"
