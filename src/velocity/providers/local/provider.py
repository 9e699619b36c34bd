"""The local provider: sandboxes as machines, with Fly's vocabulary of states."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from velocity.domain import (
    Machine,
    MachineSpec,
    MachineState,
    NotFound,
    ProviderError,
    SandboxUnavailable,
    Unavailable,
)
from velocity.domain.agent_contract import (
    SEAL_FD_VARIABLE,
    SECRET_VARIABLES,
    SECRETS_FD_VARIABLE,
    USER_VARIABLE,
    as_agent,
)
from velocity.domain.memory import more_memory
from velocity.providers.base import META_PROJECT_ID, META_USER_ID, STOPPED_OR_BEYOND, AgentEndpoint
from velocity.providers.local import cgroups, disks, seccomp
from velocity.providers.local.bwrap import (
    AGENT_ARGS,
    NPM_CACHE,
    SHIM,
    WORKSPACE,
    SandboxPaths,
    bwrap_args,
    readable_by_others,
    runtime_paths,
)
from velocity.providers.local.modules import ModulesCache
from velocity.providers.local.network import NetworkOptions, SandboxNetwork

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 2.0
# A freeze that takes longer than this (a process stuck in the kernel) is undone and reported.
FREEZE_TIMEOUT_SECONDS = 10.0
# In a machine's directory: the seal of its node_modules, as its agent last reported it (``modules``).
SEAL_FILE = "install-seal"
# A user's npm cache fuller than this when their last sandbox ends starts afresh next time.
NPM_CACHE_FULL = 0.8
# Users' npm caches kept on disk when nobody uses them; the least recently used go first.
NPM_CACHES_KEPT = 50
# Variables a sandbox may inherit from the host, so npm works behind a proxy or a private registry.
PASSTHROUGH_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
# This host's settings for fetching packages, given to every sandbox: the certificate authorities
# Node.js adds (a registry reached through a proxy with its own), and corepack's registry and keys.
TOOLS_ENV = ("NODE_EXTRA_CA_CERTS", "COREPACK_NPM_REGISTRY", "COREPACK_INTEGRITY_KEYS")


class NetworkAttachment(Protocol):
    """Puts each sandbox on a network made for it (the Fly topology's machines, ``velocity.flynet``):
    the sandbox starts inside what ``enter`` returns a command prefix for, its agent listens on its
    own port as the image's does, and the host reaches it at ``endpoint``."""

    def enter(self, machine_id: str, spec: MachineSpec) -> list[str]: ...

    def leave(self, machine_id: str) -> None: ...

    def endpoint(self, machine_id: str) -> AgentEndpoint: ...


@dataclass(frozen=True, slots=True)
class SandboxOptions:
    root: Path  # one directory per machine
    # One npm cache per user under this directory, so a user's second install comes from cache and no
    # sandbox ever reads or writes another user's (npm trusts its cache: a planted entry is installed).
    npm_cache: Path
    # Each user's npm cache is a disk of this size (where disks are size-limited, see ``disks``).
    npm_cache_mb: int = 2048
    # Started by root: the uid of the project's code (installs, dev server), and the agent's.
    sandbox_uid: int = 65534
    agent_uid: int = 65533
    pids_max: int = 512
    allow_unisolated: bool = False
    python: str = sys.executable
    # node_modules of destroyed sandboxes, kept per MachineSpec.cache_key; None: no such cache.
    modules_cache: Path | None = None
    modules_cache_entries: int = 20
    # Each sandbox in a network namespace of its own, its way out the egress proxy; None: sandboxes
    # share the host's network (machines that stand in for Fly's, whose isolation is the image's).
    network: NetworkOptions | None = None
    # Or a network of someone else's making, one per sandbox (then ``network`` must be None).
    attachment: NetworkAttachment | None = None


@dataclass(frozen=True, slots=True)
class _Uids:
    agent: int
    user: int  # and the group the two share


# A unix socket's path is at most 107 bytes (sun_path, without its NUL); the longest a sandbox's
# directory holds is its egress proxy's.
UNIX_PATH_MAX = 107
LONGEST_SOCKET_SUFFIX = "/vm0123456789ab/egress/proxy.sock"


class LocalSandboxProvider:
    name = "local"

    def __init__(self, options: SandboxOptions) -> None:
        longest = len(os.fsencode(options.root.resolve())) + len(LONGEST_SOCKET_SUFFIX)
        if longest > UNIX_PATH_MAX:
            raise SandboxUnavailable(
                f"the sandboxes' directory {options.root} is too long for the unix sockets made in it "
                f"({longest} bytes, at most {UNIX_PATH_MAX}): set VELOCITY_DATA_DIR to a shorter path"
            )
        self._options = options
        self._modules = ModulesCache(options.modules_cache, entries=options.modules_cache_entries)
        self._bwrap = shutil.which("bwrap")
        if self._bwrap is None and not options.allow_unisolated:
            raise SandboxUnavailable(
                "bubblewrap is not installed, so previews cannot be isolated: run `apt-get install "
                "bubblewrap` (make setup does), or set LOCAL_SANDBOX_ALLOW_UNISOLATED=true to accept "
                "running user code without a sandbox"
            )
        if self._bwrap is None:
            log.warning("UNISOLATED: bubblewrap is missing; previews run as plain processes on this host")
        self._cgroup_version = cgroups.detect_version()
        if self._cgroup_version is None:
            log.warning("cgroups are not writable here: memory, CPU and process limits are NOT enforced")
        self._runtime = runtime_paths()
        self._seccomp = seccomp.program() if self._bwrap is not None else b""
        self._network: SandboxNetwork | None = None
        if options.network is not None and self._bwrap is not None:
            self._network = SandboxNetwork(options.network)
        elif self._bwrap is not None:
            log.warning("sandboxes share this host's network: no egress proxy was configured")
        # Started by root, a sandbox runs the agent and the project's code as two unprivileged uids;
        # that needs the Python runtime readable by them (its parents are the sandbox's own).
        self._uids: _Uids | None = None
        if os.geteuid() == 0 and self._bwrap is not None:
            if all(readable_by_others(p) for p in self._runtime):
                self._uids = _Uids(agent=options.agent_uid, user=options.sandbox_uid)
            else:
                log.warning(
                    "the Python runtime (%s) is not readable by other users; sandboxes run as uid 0 "
                    "with no capabilities, the agent and the project's code as one. Make it "
                    "world-readable (chmod o+rx) to run them as two unprivileged uids",
                    ", ".join(map(str, self._runtime)),
                )
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._machines: dict[str, Machine] = {}
        self._pidfds: dict[str, int] = {}
        self._pending_adoptions: list[tuple[str, int]] = []
        self._changed = asyncio.Condition()
        self._cache_locks: dict[Path, asyncio.Lock] = {}
        self._destroy_locks: dict[str, asyncio.Lock] = {}
        self._cache_users: dict[Path, set[str]] = {}  # mounted npm caches, and the machines using each
        options.root.mkdir(parents=True, exist_ok=True)
        # The users' caches are the sandboxes' to write; the directory holding them is not.
        options.npm_cache.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._disk_limit_reason = disks.unavailable(options.root / ".disk-probe")
        if self._disk_limit_reason is not None:
            log.warning("sandbox disks are NOT size-limited: %s", self._disk_limit_reason)
        self._adopt()

    # --- MachineProvider -------------------------------------------------------------------------
    async def create(self, spec: MachineSpec) -> Machine:
        machine_id = "vm" + secrets.token_hex(6)
        home = self._options.root / machine_id
        home.mkdir(mode=0o700)
        paths = SandboxPaths(workspace=home / "workspace", npm_cache=home / "npm-cache")
        try:
            reused = await asyncio.to_thread(self._make_workspace, spec, home)
            paths = replace(paths, npm_cache=await self._open_npm_cache(spec, machine_id))
            listener = None if self._options.attachment else _agent_listener(home)
        except (SandboxUnavailable, OSError) as exc:
            await self._release_npm_cache(spec.metadata, machine_id)
            await asyncio.to_thread(disks.discard, home)
            if isinstance(exc, SandboxUnavailable):
                raise
            raise SandboxUnavailable(f"could not prepare the sandbox's disks: {exc}") from exc
        with listener or contextlib.nullcontext():
            return await self._start(machine_id, spec, paths, listener, reused=reused)

    async def _start(
        self,
        machine_id: str,
        spec: MachineSpec,
        paths: SandboxPaths,
        listener: socket.socket | None,
        *,
        reused: bool,
    ) -> Machine:
        home = self._options.root / machine_id
        if spec.cache_key and not reused and self._disk_limit_reason is not None:
            await asyncio.to_thread(self._modules.link, spec.cache_key, paths.workspace, home / SEAL_FILE)
        project_id = spec.metadata.get(META_PROJECT_ID) or spec.env.get("PROJECT_ID", "")
        if self._network is not None:
            try:
                await self._network.open(machine_id, project_id, home / "egress")
            except OSError as exc:
                await self._discard(machine_id, spec.metadata)
                raise SandboxUnavailable(f"could not open the sandbox's egress proxy: {exc}") from exc
        group = self._make_cgroup(machine_id, spec)
        arguments = _ArgumentsFile()
        command = self._command(machine_id, paths, group, arguments)
        if self._options.attachment is not None:
            try:
                prefix = await asyncio.to_thread(self._options.attachment.enter, machine_id, spec)
            except OSError as exc:
                await self._discard(machine_id, spec.metadata)
                raise SandboxUnavailable(f"could not attach the sandbox to its network: {exc}") from exc
            command = [*prefix, *command]
        env = self._env(spec, home, paths)
        secrets_of_agent = {name: env.pop(name) for name in SECRET_VARIABLES if name in env}
        inherited = () if listener is None else (listener.fileno(),)
        with (home / "console.log").open("ab") as console, arguments, _seal_file(home, spec) as seal_fd:
            if listener is not None:
                env["AGENT_LISTEN_FD"] = str(listener.fileno())
            if seal_fd is not None:
                env[SEAL_FD_VARIABLE] = str(seal_fd)
                inherited = (*inherited, seal_fd)
            if secrets_of_agent:
                # Through a descriptor, not the environment every process of the sandbox starts from.
                env[SECRETS_FD_VARIABLE] = str(arguments.hold_bytes(json.dumps(secrets_of_agent).encode()))
            try:
                proc = subprocess.Popen(  # noqa: ASYNC220 - fork+exec of a shell returns in a few ms
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=console,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                    close_fds=True,
                    pass_fds=(*inherited, *arguments.fds),
                )
            except OSError as exc:
                if group:
                    group.remove()
                if self._network is not None:
                    await self._network.close(machine_id)
                await self._discard(machine_id, spec.metadata)
                raise SandboxUnavailable(f"could not start a sandbox: {exc}") from exc
        now = datetime.now(UTC)
        record = {
            "id": machine_id,
            "metadata": dict(spec.metadata),
            "created_at": now.isoformat(),
            "pid": proc.pid,
            "start_time": _start_time(proc.pid),
            "cgroup_version": group.version if group else None,
            "memory_mb": spec.memory_mb,
            "cache_key": spec.cache_key,
            # Whom the sandbox's egress listener answers for, to open it again after a restart.
            "egress_project": project_id if self._network is not None else None,
        }
        _write_json(home / "machine.json", record)
        machine = Machine(
            id=machine_id, state=MachineState.STARTED, metadata=dict(spec.metadata), created_at=now
        )
        self._machines[machine_id] = machine
        self._procs[machine_id] = proc
        self._watch_exit(machine_id, proc.pid)
        return machine

    async def get(self, machine_id: str) -> Machine:
        try:
            return self._machines[machine_id]
        except KeyError:
            raise NotFound(f"machine {machine_id} not found") from None

    async def list(self, *, metadata: Mapping[str, str] | None = None) -> builtins.list[Machine]:
        wanted = dict(metadata or {})
        return [
            m
            for m in self._machines.values()
            if not m.state.is_gone and all(m.metadata.get(k) == v for k, v in wanted.items())
        ]

    async def wait(self, machine_id: str, *, state: MachineState, timeout: float) -> Machine:
        await self.get(machine_id)
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: self._reached(machine_id, state))
        except TimeoutError:
            raise Unavailable(
                f"machine {machine_id} did not reach {state.value} within {timeout} s"
            ) from None
        return await self.get(machine_id)

    async def stop(self, machine_id: str, *, timeout: float = STOP_GRACE_SECONDS) -> None:
        machine = await self.get(machine_id)
        if machine.state in STOPPED_OR_BEYOND:
            return
        if machine.state == MachineState.SUSPENDED and (group := self._cgroup(machine_id)) is not None:
            group.freeze(False)  # a frozen process takes no signal until thawed
        await self._set(machine_id, state=MachineState.STOPPING)
        pid = self._record(machine_id).get("pid")
        self._signal_group(pid, signal.SIGTERM)
        try:
            await self.wait(machine_id, state=MachineState.STOPPED, timeout=timeout)
        except Unavailable:
            self._signal_group(pid, signal.SIGKILL)
            await self.wait(machine_id, state=MachineState.STOPPED, timeout=10)
        group = self._cgroup(machine_id)
        if group:
            group.kill_all()

    async def suspend(self, machine_id: str) -> bool:
        """The cgroup freezer: every process stops where it is, its memory kept; False without one."""
        machine = await self.get(machine_id)
        group = self._cgroup(machine_id)
        if machine.state != MachineState.STARTED or group is None or not group.can_freeze:
            return False
        await self._set(machine_id, state=MachineState.SUSPENDING, updated_at=_now())
        group.freeze()
        if not await _until(group.is_frozen, timeout=FREEZE_TIMEOUT_SECONDS):
            group.freeze(False)
            await self._set(machine_id, state=MachineState.STARTED, updated_at=_now())
            raise ProviderError(f"sandbox {machine_id} did not freeze within {FREEZE_TIMEOUT_SECONDS:g} s")
        await self._set(machine_id, state=MachineState.SUSPENDED, updated_at=_now())
        return True

    async def resume(self, machine_id: str) -> None:
        machine = await self.get(machine_id)
        group = self._cgroup(machine_id)
        if machine.state != MachineState.SUSPENDED or group is None:
            return
        group.freeze(False)
        await _until(lambda: not group.is_frozen(), timeout=FREEZE_TIMEOUT_SECONDS)
        await self._set(machine_id, state=MachineState.STARTED, updated_at=_now())

    async def assign(self, machine_id: str, metadata: Mapping[str, str]) -> None:
        """Record the preview's metadata, and answer the sandbox's egress for its project from now
        on (the snapshot it fetches next is the project's, not the pool template's)."""
        machine = await self.get(machine_id)
        home = self._options.root / machine_id
        record = self._record(machine_id)
        merged = {**machine.metadata, **metadata}
        project_id = metadata.get(META_PROJECT_ID)
        if self._network is not None and project_id:
            await self._network.open(machine_id, project_id, home / "egress")
            record["egress_project"] = project_id
        record["metadata"] = merged
        _write_json(home / "machine.json", record)
        await self._set(machine_id, metadata=merged)

    async def destroy(self, machine_id: str, *, force: bool = True) -> None:
        # One destroy of a sandbox at a time (a stop and a reconcile may ask at once); the second
        # finds it destroyed.
        async with self._destroy_locks.setdefault(machine_id, asyncio.Lock()):
            await self._destroy_once(machine_id, force=force)
        self._destroy_locks.pop(machine_id, None)

    async def _destroy_once(self, machine_id: str, *, force: bool) -> None:
        machine = self._machines.get(machine_id)
        if machine is None or machine.state == MachineState.DESTROYED:
            return
        await self.stop(machine_id, timeout=STOP_GRACE_SECONDS if force else 30)
        await self._set(machine_id, state=MachineState.DESTROYING)
        if self._network is not None:
            await self._network.close(machine_id)
        group = self._cgroup(machine_id)
        if group:
            await _until_empty(group)
            group.remove()
        record = self._record(machine_id)
        await asyncio.to_thread(self._put_away, machine_id, record.get("cache_key"))
        await self._discard(machine_id, record.get("metadata", machine.metadata))
        self._procs.pop(machine_id, None)
        await self._set(machine_id, state=MachineState.DESTROYED)

    async def logs(self, machine_id: str, *, tail: int = 100) -> builtins.list[str]:
        await self.get(machine_id)
        try:
            text = (self._options.root / machine_id / "console.log").read_bytes()[-256_000:]
        except FileNotFoundError:
            return []
        return text.decode("utf-8", "replace").splitlines()[-tail:]

    def endpoint(self, machine: Machine) -> AgentEndpoint:
        if self._options.attachment is not None:
            return self._options.attachment.endpoint(machine.id)
        return AgentEndpoint(base_url="http://agent", uds=str(agent_socket(self._options.root / machine.id)))

    async def aclose(self) -> None:
        # The sandboxes live on; the next orchestrator opens their egress listeners again.
        if self._network is not None:
            await self._network.aclose()
        for machine_id, fd in list(self._pidfds.items()):
            asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)
            del self._pidfds[machine_id]

    # --- sandboxes -------------------------------------------------------------------------------
    def _command(
        self,
        machine_id: str,
        paths: SandboxPaths,
        group: cgroups.Cgroup | None,
        arguments: _ArgumentsFile,
    ) -> builtins.list[str]:
        home = self._options.root / machine_id
        procs = " ".join(str(p) for p in group.procs_files) if group else ""
        agent = [self._options.python, *AGENT_ARGS]
        if self._bwrap is None:
            inner = agent
        else:
            egress = home / "egress" if self._network is not None else None
            args = bwrap_args(
                paths,
                hostname=machine_id,
                runtime=self._runtime,
                egress=egress,
                as_root=self._uids is not None,
            )
            args += ["--seccomp", str(arguments.hold_bytes(self._seccomp))]
            if self._uids is not None:
                agent = as_agent(self._uids.agent, self._uids.user, agent)
            # bubblewrap reads its options from a descriptor (and closes it), so the sandbox's
            # /proc/1/cmdline shows no host path.
            inner = [self._bwrap, "--args", str(arguments.hold(args[1:])), "--", *agent]
        return ["sh", "-c", SHIM, "velocity-shim", str(home / "exit_status"), procs, *inner]

    # --- disks -----------------------------------------------------------------------------------
    def _make_workspace(self, spec: MachineSpec, home: Path) -> bool:
        """The machine's workspace: a disk of ``spec.disk_mb`` (the owner's kept one for this cache key
        when there is one) or, where disks are not size-limited, a directory. True: it holds a kept
        install already."""
        workspace = home / "workspace"
        if self._disk_limit_reason is not None:
            self._own(workspace)
            self._share(workspace)
            return False
        image = home / "workspace.img"
        if spec.cache_key and self._modules.claim(spec.cache_key, image, home / SEAL_FILE):
            try:
                disks.mount(image, workspace)
                return True
            except disks.DiskError as exc:
                log.warning("a kept disk would not mount, so this machine installs afresh: %s", exc)
                image.unlink(missing_ok=True)
        disks.make(image, workspace, spec.disk_mb, owner=self._owner)
        self._share(workspace)
        return False

    def _put_away(self, machine_id: str, cache_key: str | None) -> None:
        """Keep the finished install of a machine whose processes have all ended, as the modules cache
        keeps it (the whole disk, or the node_modules directory)."""
        home = self._options.root / machine_id
        workspace = home / "workspace"
        if self._disk_limit_reason is not None:
            if cache_key:
                self._modules.keep(cache_key, workspace, home / SEAL_FILE)
            return
        keep = (
            bool(cache_key)
            and os.path.ismount(workspace)
            and self._modules.ready_to_keep(workspace, home / SEAL_FILE)
        )
        disks.unmount(workspace)
        if keep and cache_key:
            self._modules.keep_image(cache_key, home / "workspace.img", home / SEAL_FILE)

    async def _discard(self, machine_id: str, metadata: Mapping[str, str]) -> None:
        if self._options.attachment is not None:
            await asyncio.to_thread(self._options.attachment.leave, machine_id)
        await self._release_npm_cache(metadata, machine_id)
        await asyncio.to_thread(disks.discard, self._options.root / machine_id)

    def _user_npm_cache(self, metadata: Mapping[str, str]) -> Path | None:
        user = metadata.get(META_USER_ID)
        if not user:
            return None
        return self._options.npm_cache / hashlib.sha256(user.encode()).hexdigest()[:32]

    async def _open_npm_cache(self, spec: MachineSpec, machine_id: str) -> Path:
        """The user's own npm cache (a disk of ``npm_cache_mb``, mounted while any of their sandboxes
        runs); a machine with no user gets one of its own, in its directory."""
        cache = self._user_npm_cache(spec.metadata)
        if cache is None:
            cache = self._options.root / machine_id / "npm-cache"
            self._own(cache)
            return cache
        if self._disk_limit_reason is not None:
            self._own(cache)
            return cache
        async with self._cache_lock(cache):
            await asyncio.to_thread(self._mount_npm_cache, cache)
            self._cache_users.setdefault(cache, set()).add(machine_id)
        return cache

    def _mount_npm_cache(self, cache: Path) -> None:
        if os.path.ismount(cache):
            return
        image = cache.with_suffix(".img")
        if image.exists():
            try:
                disks.mount(image, cache)
                os.utime(image)
                return
            except disks.DiskError as exc:
                log.warning("a user's npm cache would not mount, so it starts afresh: %s", exc)
                image.unlink(missing_ok=True)
        disks.make(image, cache, self._options.npm_cache_mb, owner=self._owner)

    async def _release_npm_cache(self, metadata: Mapping[str, str], machine_id: str) -> None:
        """Unmount the user's npm cache once no other sandbox of theirs runs; a nearly full one is
        dropped, and beyond ``NPM_CACHES_KEPT`` users' caches the least recently used go."""
        cache = self._user_npm_cache(metadata)
        if cache is None or self._disk_limit_reason is not None:
            return
        async with self._cache_lock(cache):
            users = self._cache_users.get(cache, set())
            if machine_id not in users:
                return
            users.discard(machine_id)
            if users:
                return
            del self._cache_users[cache]
            await asyncio.to_thread(self._unmount_npm_cache, cache)

    def _unmount_npm_cache(self, cache: Path) -> None:
        """Unmount a cache nobody uses (dropping it when nearly full), then drop the least recently
        used idle caches beyond ``NPM_CACHES_KEPT``."""
        if os.path.ismount(cache):
            full = disks.used_fraction(cache) > NPM_CACHE_FULL
            disks.unmount(cache)
            if full:
                log.info("a user's npm cache is over %d%% full: it starts afresh", NPM_CACHE_FULL * 100)
                cache.with_suffix(".img").unlink(missing_ok=True)
        idle = sorted(
            (i for i in self._options.npm_cache.glob("*.img") if not os.path.ismount(i.with_suffix(""))),
            key=lambda i: i.stat().st_mtime,
        )
        for image in idle[: max(0, len(idle) - NPM_CACHES_KEPT)]:
            image.unlink(missing_ok=True)

    def _cache_lock(self, cache: Path) -> asyncio.Lock:
        return self._cache_locks.setdefault(cache, asyncio.Lock())

    def _env(self, spec: MachineSpec, home: Path, paths: SandboxPaths) -> dict[str, str]:
        unisolated = self._bwrap is None
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": "/tmp",
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "NPM_CONFIG_UPDATE_NOTIFIER": "false",
            "NPM_CONFIG_CACHE": str(paths.npm_cache) if unisolated else NPM_CACHE,
            "WORKSPACE": WORKSPACE,
        }
        if self._network is None:
            env.update({k: os.environ[k] for k in PASSTHROUGH_ENV if k in os.environ})
        env.update({k: os.environ[k] for k in TOOLS_ENV if k in os.environ})
        env.update(spec.env)
        if self._network is not None:
            env.update(self._network.env(spec.env))
        if self._uids is not None:
            env[USER_VARIABLE] = f"{self._uids.user}:{self._uids.user}"
        if unisolated:
            # Without a mount namespace the agent uses the host paths directly.
            env["WORKSPACE"] = str(home / "workspace")
        return env

    def _make_cgroup(self, machine_id: str, spec: MachineSpec) -> cgroups.Cgroup | None:
        if self._cgroup_version is None:
            return None
        limits = cgroups.Limits(
            memory_bytes=spec.memory_mb << 20, cpus=float(spec.cpus), pids=self._options.pids_max
        )
        try:
            return cgroups.create(machine_id, limits, version=self._cgroup_version)
        except OSError as exc:
            raise SandboxUnavailable(f"could not create the sandbox's cgroups: {exc}") from exc

    def _cgroup(self, machine_id: str) -> cgroups.Cgroup | None:
        version = self._record(machine_id).get("cgroup_version")
        return cgroups.attach(machine_id, version=version) if version else None

    @property
    def _owner(self) -> int | None:
        """Who owns what a sandbox writes on the host: the project's uid (None: the caller's)."""
        return self._uids.user if self._uids is not None else None

    def _own(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        if self._owner is not None:
            os.chown(directory, self._owner, self._owner)

    def _share(self, workspace: Path) -> None:
        """The workspace is the project's and, through its group, the agent's (which writes the
        project's files there with umask 002)."""
        if self._uids is not None:
            workspace.chmod(0o2775)

    # --- process exits ---------------------------------------------------------------------------
    def _watch_exit(self, machine_id: str, pid: int) -> None:
        """Learn of the shim's exit from a pidfd, for our children and adopted sandboxes alike."""
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            self._exited(machine_id)
            return
        self._pidfds[machine_id] = fd
        asyncio.get_running_loop().add_reader(fd, self._on_exit_fd, machine_id)

    def _on_exit_fd(self, machine_id: str) -> None:
        fd = self._pidfds.pop(machine_id)
        asyncio.get_running_loop().remove_reader(fd)
        os.close(fd)
        proc = self._procs.get(machine_id)
        if proc is not None:
            proc.poll()  # reap our child
        self._exited(machine_id)

    def _exited(self, machine_id: str) -> None:
        home = self._options.root / machine_id
        record = self._record(machine_id)
        try:
            status: int | None = int((home / "exit_status").read_text().strip())
        except (FileNotFoundError, ValueError):
            status = None
        group = self._cgroup(machine_id)
        oom = group.oom_kills() if group else 0
        if oom:
            limit = record.get("memory_mb")
            reason = (
                f"out of memory: the kernel killed {oom} process(es) at the {limit} MB limit; "
                + more_memory(limit if isinstance(limit, int) else None)
            )
        elif status is None:
            reason = "killed"
        else:
            reason = f"exited with status {status}"
        record["exit_reason"] = reason
        if home.exists():
            _write_json(home / "machine.json", record)
        machine = self._machines.get(machine_id)
        if machine is not None and not machine.state.is_gone:
            # As on Fly, a machine whose main process ends is ``stopped``; the reason says why.
            self._update(machine_id, state=MachineState.STOPPED, exit_reason=reason)

    def _adopt(self) -> None:
        """Find sandboxes a previous orchestrator left and track them again."""
        for home in sorted(self._options.root.iterdir()):
            try:
                record = json.loads((home / "machine.json").read_text())
            except (FileNotFoundError, ValueError):
                if home.is_dir() and not home.name.startswith("."):
                    self._abandon(home)
                continue
            machine_id = record["id"]
            pid = record.get("pid")
            alive = pid is not None and _start_time(pid) == record.get("start_time")
            state = MachineState.STARTED if alive else MachineState.STOPPED
            if alive and (group := self._cgroup(machine_id)) is not None and group.is_frozen():
                state = MachineState.SUSPENDED
            self._machines[machine_id] = Machine(
                id=machine_id,
                state=state,
                metadata=record.get("metadata", {}),
                created_at=datetime.fromisoformat(record["created_at"]),
                exit_reason=record.get("exit_reason"),
            )
            if alive:
                self._pending_adoptions.append((machine_id, pid))
            cache = self._user_npm_cache(record.get("metadata", {}))
            if cache is not None and not self._machines[machine_id].state.is_gone:
                # A stopped machine still counts until it is destroyed: its destroy releases the cache.
                self._cache_users.setdefault(cache, set()).add(machine_id)
        if self._pending_adoptions:
            log.info("found %d running sandboxes from an earlier run", len(self._pending_adoptions))

    def _abandon(self, home: Path) -> None:
        """A sandbox whose create an earlier orchestrator did not finish (killed before it wrote
        ``machine.json``): no preview knows it, so whatever it started goes, with its disks."""
        log.warning("removing sandbox %s, whose start an earlier run did not finish", home.name)
        if self._cgroup_version is not None:
            group = cgroups.attach(home.name, version=self._cgroup_version)
            group.kill_all()
            deadline = time.monotonic() + 2.0
            while group.pids() and time.monotonic() < deadline:
                time.sleep(0.02)  # at start, once: the killed processes leave within milliseconds
            with contextlib.suppress(OSError):
                group.remove()
        disks.discard(home)

    async def start_watching(self) -> None:
        """Watch adopted sandboxes for exit (needs the running loop, so not in ``__init__``)."""
        pending, self._pending_adoptions = self._pending_adoptions, []
        for machine_id, pid in pending:
            project_id = self._record(machine_id).get("egress_project")
            if self._network is not None and project_id is not None:
                await self._network.open(machine_id, project_id, self._options.root / machine_id / "egress")
            self._watch_exit(machine_id, pid)

    # --- state -----------------------------------------------------------------------------------
    def _record(self, machine_id: str) -> dict[str, Any]:
        try:
            data = json.loads((self._options.root / machine_id / "machine.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return dict(data)

    def _reached(self, machine_id: str, state: MachineState) -> bool:
        machine = self._machines.get(machine_id)
        if machine is None or machine.state == state:
            return True
        return state == MachineState.STOPPED and machine.state in STOPPED_OR_BEYOND

    def _update(self, machine_id: str, **changes: Any) -> None:
        self._machines[machine_id] = replace(self._machines[machine_id], **changes)
        asyncio.get_running_loop().create_task(self._notify())

    async def _set(self, machine_id: str, **changes: Any) -> None:
        self._machines[machine_id] = replace(self._machines[machine_id], **changes)
        await self._notify()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _signal_group(self, pid: int | None, sig: signal.Signals) -> None:
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)


class _ArgumentsFile:
    """What bubblewrap reads from descriptors: NUL-separated arguments (``--args FD``) and the seccomp
    program (``--seccomp FD``), each in an anonymous memory file the sandbox inherits."""

    def __init__(self) -> None:
        self.fds: tuple[int, ...] = ()

    def hold(self, args: builtins.list[str]) -> int:
        return self.hold_bytes(b"".join(os.fsencode(a) + b"\0" for a in args))

    def hold_bytes(self, data: bytes) -> int:
        fd = os.memfd_create("bwrap", 0)  # inheritable: no MFD_CLOEXEC
        os.write(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
        self.fds = (*self.fds, fd)
        return fd

    def __enter__(self) -> _ArgumentsFile:
        return self

    def __exit__(self, *_: object) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = ()


@contextlib.contextmanager
def _seal_file(home: Path, spec: MachineSpec) -> Iterator[int | None]:
    """A descriptor of the machine's seal file for its agent, where its node_modules may be kept."""
    if not spec.cache_key:
        yield None
        return
    fd = os.open(home / SEAL_FILE, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        yield fd
    finally:
        os.close(fd)


def agent_socket(home: Path) -> Path:
    """Where the host reaches a sandbox's agent: in the machine's own directory, which no sandbox sees,
    so no sandbox can put a link to another socket in its place."""
    return home / "agent.sock"


def _agent_listener(home: Path) -> socket.socket:
    """The agent's listening socket, bound by the host and inherited by the agent (the host closes its
    copy once the sandbox has started)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(agent_socket(home)))
        listener.listen(128)
    except OSError as exc:
        listener.close()
        raise SandboxUnavailable(f"could not open the agent's socket in {home}: {exc}") from exc
    return listener


async def _until_empty(group: cgroups.Cgroup, attempts: int = 200) -> None:
    """The kernel empties a cgroup a moment after its last process is killed."""
    for _ in range(attempts):
        if not group.pids():
            return
        group.kill_all()
        await asyncio.sleep(0.01)


async def _until(condition: Callable[[], bool], *, timeout: float) -> bool:
    """Whether ``condition`` holds within ``timeout`` s: the kernel gives no event when a cgroup has
    frozen or thawed (v1), so read it again every millisecond or so."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.001)
    return True


def _now() -> datetime:
    return datetime.now(UTC)


def _start_time(pid: int) -> int | None:
    """A process's start time in clock ticks: tells a live sandbox from a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(data))
    os.replace(partial, path)
