"""Fetch the project's snapshot and unpack it into the workspace, refusing anything that escapes it.

The tarball comes from outside the machine, so every member goes through ``tarfile``'s ``data`` filter
(no absolute paths, no ``..``, no links leading out, no device files, no set-uid bits) and the whole
archive is checked before the first byte is written: a refused snapshot leaves the workspace untouched.
"""

from __future__ import annotations

import io
import stat
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from velocity.agent.config import redact_url
from velocity.agent.versions import AGENT_VERSION
from velocity.domain.errors import AgentError, BadRequest

MAX_SNAPSHOT_BYTES = 200 * 1024 * 1024  # compressed
MAX_UNPACKED_BYTES = 1024 * 1024 * 1024
MAX_MEMBERS = 100_000
RETRY_FOR_SECONDS = 10.0
_RETRIED_STATUSES = frozenset({502, 503, 504})


class _Transient(Exception):
    """A failure worth another try: nothing listens yet, or a gateway in between is not ready."""


def _fetch_once(url: str, token: str | None) -> bytes:
    headers = {"Accept": "application/gzip", "User-Agent": f"velocity-agent/{AGENT_VERSION}"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    name = redact_url(url)
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as response:
            data: bytes = response.read(MAX_SNAPSHOT_BYTES + 1)
    except urllib.error.HTTPError as exc:
        if exc.code in _RETRIED_STATUSES:
            raise _Transient(f"HTTP {exc.code}") from exc
        raise AgentError(f"fetching the snapshot from {name} failed: HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ConnectionRefusedError | ConnectionResetError):
            raise _Transient(str(exc.reason)) from exc
        raise AgentError(f"fetching the snapshot from {name} failed: {exc.reason}") from exc
    except (OSError, ValueError) as exc:
        raise AgentError(f"fetching the snapshot from {name} failed: {exc}") from exc
    if len(data) > MAX_SNAPSHOT_BYTES:
        raise AgentError(f"the snapshot at {name} is larger than {MAX_SNAPSHOT_BYTES // 2**20} MiB")
    return data


def fetch(url: str, token: str | None) -> bytes:
    """GET the snapshot, retrying briefly while its server refuses connections or answers 502-504.
    Synchronous: it runs before the agent has imported asyncio."""
    deadline = time.monotonic() + RETRY_FOR_SECONDS
    delay = 0.05
    while True:
        try:
            return _fetch_once(url, token)
        except _Transient as exc:
            if time.monotonic() + delay > deadline:
                name = redact_url(url)
                raise AgentError(
                    f"fetching the snapshot from {name} failed for {RETRY_FOR_SECONDS:.0f} s: {exc}"
                ) from exc
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


def _already(archive: tarfile.TarFile, member: tarfile.TarInfo, destination: Path) -> bool:
    """The member is a file whose bytes the destination holds already (checked without following a
    link: only the agent has written there)."""
    if not member.isfile():
        return False
    target = destination / member.name
    try:
        if target.is_symlink() or target.stat().st_size != member.size:
            return False
        reader = archive.extractfile(member)
        return reader is not None and reader.read() == target.read_bytes()
    except OSError:
        return False


def _shared(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo:
    """Python's data filter, then the group's write bit back on files and directories: the project's
    user shares the agent's group and must be able to change what the snapshot holds (Next.js
    rewrites next-env.d.ts at every start; linters fix files in place)."""
    kept = tarfile.data_filter(member, path)
    if kept.mode is not None and (kept.isfile() or kept.isdir()):
        kept = kept.replace(mode=kept.mode | stat.S_IWGRP, deep=False)
    return kept


def extract(data: bytes, destination: Path, *, keep_unchanged: bool = False) -> int:
    """Unpack a (gzip) tarball into ``destination``; returns the number of members. With
    ``keep_unchanged`` a file whose bytes are already there is not written again (a running dev
    server's watcher sees only what changed)."""
    root = str(destination)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
            members = archive.getmembers()
            if len(members) > MAX_MEMBERS:
                raise BadRequest(f"the snapshot has more than {MAX_MEMBERS} entries")
            if sum(member.size for member in members) > MAX_UNPACKED_BYTES:
                raise BadRequest(f"the snapshot unpacks to more than {MAX_UNPACKED_BYTES // 2**20} MiB")
            for member in members:
                # The data filter would make an absolute name relative; such an archive is refused instead.
                if member.name.startswith("/"):
                    raise BadRequest(f"the snapshot was refused: {member.name[:80]!r} is an absolute path")
                tarfile.data_filter(member, root)
            if keep_unchanged:
                members = [m for m in members if not _already(archive, m, destination)]
            archive.extractall(root, members=members, filter=_shared)
    except tarfile.FilterError as exc:
        raise BadRequest(f"the snapshot was refused: {exc}") from exc
    except (tarfile.TarError, EOFError) as exc:
        raise BadRequest(f"the snapshot is not a readable tarball: {exc}") from exc
    except OSError as exc:
        raise AgentError(f"writing the snapshot into {root} failed: {exc}") from exc
    return len(members)
