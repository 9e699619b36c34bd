"""Size-limited disks for what sandboxes write: an ext4 filesystem in a sparse file, loop-mounted.

A sandbox's workspace is a disk of its own, sized by
``CONTAINER_DISK_MB``; each user's npm cache on another, sized by ``LOCAL_NPM_CACHE_MB``. A sandbox
that writes more gets ``ENOSPC`` and the host's own filesystem never fills. The image is sparse, so a
disk costs the host only what was written; making and mounting one takes about 20 ms. Disks are
mounted ``nosuid,nodev``, and the host never executes anything from them.

Where this host cannot mount one (not root, no loop devices, no ``mkfs.ext4``), sandboxes write to
plain directories with no size limit, and the provider says so once at start.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)

MOUNT_OPTIONS = "loop,nosuid,nodev,noatime"
# No journal: a disk is scratch space, and its journal would be written in full at mkfs time.
MKFS = ("mkfs.ext4", "-q", "-F", "-O", "^has_journal", "-m", "0", "-E", "lazy_itable_init=1,nodiscard")


class DiskError(OSError):
    """A disk could not be made, mounted or unmounted."""


def make(image: Path, mountpoint: Path, size_mb: int, *, owner: int | None = None) -> None:
    """A new empty disk of ``size_mb`` in ``image``, mounted at ``mountpoint``."""
    with image.open("xb") as f:
        f.truncate(size_mb << 20)
    os.chmod(image, 0o600)
    extra = ("-E", f"root_owner={owner}:{owner}") if owner is not None else ()
    _run(*MKFS, *extra, str(image))
    mount(image, mountpoint)
    (mountpoint / "lost+found").rmdir()  # the disk's root is a workspace or a cache: nothing else in it


def mount(image: Path, mountpoint: Path) -> None:
    mountpoint.mkdir(mode=0o700, exist_ok=True)
    _run("mount", "-t", "ext4", "-o", MOUNT_OPTIONS, str(image), str(mountpoint))


def unmount(mountpoint: Path) -> None:
    """Unmount ``mountpoint`` if it is mounted; lazily when something still holds it open, so its
    loop device goes once the last user does."""
    for command in (("umount",), ("umount", "--lazy")):
        if not os.path.ismount(mountpoint):
            return  # (again: something else may have unmounted it meanwhile)
        try:
            _run(*command, str(mountpoint))
            return
        except DiskError:
            if command[-1] == "--lazy" and os.path.ismount(mountpoint):
                raise


def discard(directory: Path) -> None:
    """Remove ``directory`` with every disk mounted below it, never deleting through a mount."""
    for mountpoint in _mounts_below(directory):
        try:
            unmount(mountpoint)
        except DiskError as exc:
            log.warning("could not unmount %s, so %s stays: %s", mountpoint, directory, exc)
            return
    shutil.rmtree(directory, ignore_errors=True)


def used_fraction(mountpoint: Path) -> float:
    stats = os.statvfs(mountpoint)
    return 1 - stats.f_bavail / stats.f_blocks if stats.f_blocks else 0.0


def unavailable(probe_dir: Path) -> str | None:
    """Why this host cannot give sandboxes sized disks (None: it can), found by making and mounting
    a small one in ``probe_dir`` (removed after)."""
    if os.geteuid() != 0:
        return "mounting a loop device needs root"
    if shutil.which("mkfs.ext4") is None:
        return "mkfs.ext4 is not installed (Debian package e2fsprogs)"
    if not Path("/dev/loop-control").exists():
        return "this kernel has no loop devices (/dev/loop-control)"
    probe_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    image, mountpoint = probe_dir / "probe.img", probe_dir / "probe"
    try:
        image.unlink(missing_ok=True)
        make(image, mountpoint, 16)
        unmount(mountpoint)
    except OSError as exc:
        return f"a test disk could not be mounted ({exc})"
    finally:
        image.unlink(missing_ok=True)
        if not os.path.ismount(mountpoint):
            shutil.rmtree(probe_dir, ignore_errors=True)
    return None


def _mounts_below(directory: Path) -> list[Path]:
    """Mount points at or below ``directory``, deepest first."""
    prefix = str(directory.resolve())
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        for line in mountinfo:
            # The mount point is the fifth field, with spaces and the like escaped as octal.
            point = line.split()[4].encode().decode("unicode_escape")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(Path(point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _run(*command: str) -> None:
    done = subprocess.run(command, capture_output=True, check=False)
    if done.returncode != 0:
        message = (done.stderr or done.stdout).decode(errors="replace").strip()
        raise DiskError(f"{command[0]} failed: {message[-300:]}")
