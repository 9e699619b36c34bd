"""Memory, CPU and process limits for one sandbox, on cgroup v1 (these machines) or v2 (most laptops),
and the freezer that suspends it.

The sandbox's first process joins the groups before it execs bubblewrap, so everything it starts
inherits them. v1 has no ``cgroup.kill``: the pid namespace ends the tree; ``kill_all`` is the
belt to those braces.
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PARENT = "velocity"
CPU_PERIOD_US = 100_000


@dataclass(frozen=True, slots=True)
class Limits:
    memory_bytes: int
    cpus: float
    pids: int


class Cgroup:
    """One sandbox's groups: a directory per v1 controller, or a single v2 directory."""

    def __init__(self, name: str, dirs: dict[str, Path], version: int) -> None:
        self.name = name
        self.dirs = dirs  # controller ("memory", "pids", "cpu", or "unified") -> directory
        self.version = version

    @property
    def procs_files(self) -> list[Path]:
        return sorted({d / "cgroup.procs" for d in self.dirs.values()})

    def pids(self) -> list[int]:
        found: set[int] = set()
        for procs in self.procs_files:
            try:
                found.update(int(line) for line in procs.read_text().split())
            except FileNotFoundError:
                continue
        return sorted(found)

    def oom_kills(self) -> int:
        """How many processes the kernel killed for exceeding the memory limit."""
        memory = self.dirs.get("memory") or self.dirs.get("unified")
        if memory is None:
            return 0
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        try:
            for line in (memory / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (FileNotFoundError, ValueError):
            pass
        return 0

    def pids_limit_hits(self) -> int:
        """How many forks the pids limit refused."""
        pids = self.dirs.get("pids") or self.dirs.get("unified")
        if pids is None:
            return 0
        try:
            for line in (pids / "pids.events").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "max":
                    return int(value)
        except (FileNotFoundError, ValueError):
            pass
        return 0

    @property
    def can_freeze(self) -> bool:
        return self._freezer_file is not None and self._freezer_file.exists()

    def freeze(self, frozen: bool = True) -> None:
        """Ask the kernel to stop (or let go on) every process of the sandbox where it is; the
        change has taken effect once ``is_frozen`` says so."""
        if self._freezer_file is None:
            raise OSError("no cgroup freezer here")
        value = ("FROZEN" if frozen else "THAWED") if self.version == 1 else int(frozen)
        _write(self._freezer_file, value)

    def is_frozen(self) -> bool:
        """True once every process is frozen (v1's ``FREEZING`` is not yet)."""
        try:
            if self.version == 1:
                return self._freezer_file is not None and self._freezer_file.read_text().strip() == "FROZEN"
            return "frozen 1" in (self.dirs["unified"] / "cgroup.events").read_text().splitlines()
        except FileNotFoundError:
            return False

    @property
    def _freezer_file(self) -> Path | None:
        if self.version == 2:
            return self.dirs["unified"] / "cgroup.freeze"
        freezer = self.dirs.get("freezer")
        return freezer / "freezer.state" if freezer else None

    def kill_all(self) -> None:
        # Frozen v1 processes do not die until thawed (v2's do).
        if self.version == 1 and self.is_frozen():
            self.freeze(False)
        if self.version == 2 and (self.dirs["unified"] / "cgroup.kill").exists():
            (self.dirs["unified"] / "cgroup.kill").write_text("1")
            return
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def remove(self) -> None:
        for directory in self.dirs.values():
            with contextlib.suppress(FileNotFoundError):
                directory.rmdir()


def detect_version(root: Path = ROOT) -> int | None:
    """1 or 2 when we may create groups here, ``None`` when limits cannot be enforced."""
    if (root / "memory" / "memory.limit_in_bytes").exists():
        return 1 if os.access(root / "memory", os.W_OK) else None
    if (root / "cgroup.controllers").exists():
        return 2 if os.access(root, os.W_OK) else None
    return None


def create(name: str, limits: Limits, *, version: int, root: Path = ROOT) -> Cgroup:
    """Make the groups and write the limits; raises ``OSError`` when the host refuses."""
    if version == 1:
        dirs = {c: root / c / PARENT / name for c in _v1_controllers(root)}
        for directory in dirs.values():
            directory.mkdir(parents=True, exist_ok=True)
        _write(dirs["memory"] / "memory.limit_in_bytes", limits.memory_bytes)
        memsw = dirs["memory"] / "memory.memsw.limit_in_bytes"
        if memsw.exists():  # only with swap accounting; keeps the limit from leaking into swap
            _write(memsw, limits.memory_bytes)
        _write(dirs["pids"] / "pids.max", limits.pids)
        _write(dirs["cpu"] / "cpu.cfs_period_us", CPU_PERIOD_US)
        _write(dirs["cpu"] / "cpu.cfs_quota_us", int(limits.cpus * CPU_PERIOD_US))
        return Cgroup(name, dirs, 1)
    parent = root / PARENT
    parent.mkdir(exist_ok=True)
    _write(root / "cgroup.subtree_control", "+memory +pids +cpu")
    _write(parent / "cgroup.subtree_control", "+memory +pids +cpu")
    directory = parent / name
    directory.mkdir(exist_ok=True)
    _write(directory / "memory.max", limits.memory_bytes)
    if (directory / "memory.swap.max").exists():
        _write(directory / "memory.swap.max", 0)
    _write(directory / "pids.max", limits.pids)
    _write(directory / "cpu.max", f"{int(limits.cpus * CPU_PERIOD_US)} {CPU_PERIOD_US}")
    return Cgroup(name, {"unified": directory}, 2)


def attach(name: str, *, version: int, root: Path = ROOT) -> Cgroup:
    """The groups of a sandbox made earlier (by this process or a previous one)."""
    if version == 1:
        return Cgroup(name, {c: root / c / PARENT / name for c in _v1_controllers(root)}, 1)
    return Cgroup(name, {"unified": root / PARENT / name}, 2)


def _v1_controllers(root: Path) -> tuple[str, ...]:
    """The v1 hierarchies a sandbox joins: the freezer too where it is mounted (it suspends)."""
    limits = ("memory", "pids", "cpu")
    return (*limits, "freezer") if os.access(root / "freezer", os.W_OK) else limits


def _write(path: Path, value: object) -> None:
    path.write_text(str(value))
