"""A pooled agent taking a preview's identity (``POST /__velocity/claim``).

A warm-pool machine boots the pool's template (``AGENT_POOLED=1``): its dependencies installed, its
dev server running, no user's code anywhere. A claim, sent by the orchestrator with the pool
machine's origin secret, names the preview and carries its credentials; the agent then fetches the
project's snapshot with them, swaps the project's files in for the template's and becomes the
preview's agent: from then on only the preview's origin secret opens it, and it is never pooled
again (the orchestrator destroys the machine when the preview ends). A project with the template's
dependency files keeps the running dev server, which picks the new files up as it would an edit;
any other installs first (from the machine's npm cache, which holds the template's packages).
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from velocity.agent.snapshot import extract, fetch
from velocity.agent.workspace import Workspace
from velocity.domain.errors import BadRequest
from velocity.domain.package_managers import DEPENDENCY_FILES

_FIELDS = ("preview_id", "project_id", "token", "origin_secret")
CONFIG_STEMS = frozenset({"vite", "next", "svelte", "astro", "nuxt", "vue", "webpack", "tailwind", "postcss"})


@dataclass(frozen=True, slots=True)
class Claim:
    preview_id: str
    project_id: str
    token: str
    origin_secret: str

    @classmethod
    def parse(cls, body: bytes) -> Claim:
        try:
            data = json.loads(body)
        except ValueError:
            raise BadRequest("a claim must be a JSON object") from None
        if not isinstance(data, dict):
            raise BadRequest("a claim must be a JSON object")
        missing = [name for name in _FIELDS if not isinstance(data.get(name), str) or not data[name]]
        if missing:
            raise BadRequest(f"the claim lacks {', '.join(missing)} (each a non-empty string)")
        return cls(**{name: data[name] for name in _FIELDS})

    @property
    def environment(self) -> dict[str, str]:
        """What the agent's own environment says after the claim (live sync reads it)."""
        return {
            "PROJECT_ID": self.project_id,
            "PREVIEW_ID": self.preview_id,
            "AGENT_TOKEN": self.token,
            "AGENT_ORIGIN_SECRET": self.origin_secret,
        }


def snapshot_url(template_url: str, project_id: str) -> str:
    """The project's snapshot on the server the template came from (the pooled machine reaches the
    orchestrator by whatever name its template URL uses)."""
    parts = urlsplit(template_url)
    path = f"/v1/projects/{quote(project_id, safe='')}/snapshot"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


@dataclass(frozen=True, slots=True)
class Swap:
    members: int
    removed: int
    dependencies_changed: bool
    config_changed: bool
    fetch_ms: float


def swap_in(claim: Claim, url: str, workspace: Path, template: bytes) -> Swap:
    """Fetch the claimed project's snapshot and make the workspace hold it instead of ``template``
    (the snapshot the machine booted): the template's files the project lacks are removed, what the
    install made stays. Blocking: the caller runs it in a thread."""
    began = time.monotonic()
    data = fetch(url, claim.token)
    fetched = round((time.monotonic() - began) * 1000, 1)
    old, new = _archive_files(template), _archive_files(data)
    members = extract(data, workspace, keep_unchanged=True)
    files = Workspace(workspace)
    removed = sum(1 for path in sorted(old.keys() - new.keys()) if files.delete(path))
    changed = any(old.get(name) != new.get(name) for name in DEPENDENCY_FILES)
    configured = any(old.get(name) != new.get(name) for name in new.keys() | old.keys() if _config(name))
    return Swap(members, removed, changed, configured, fetched)


def _config(name: str) -> bool:
    """A dev server's own configuration: changing it restarts the server (Vite restarts itself,
    and answers nothing meanwhile), so the agent restarts it and holds requests until it is back."""
    stem = name.split(".", 1)[0]
    return "/" not in name and stem in CONFIG_STEMS


def _archive_files(data: bytes) -> dict[str, bytes | None]:
    """The archive's files by normalised name, with the contents of its dependency and dev-server
    configuration files."""
    found: dict[str, bytes | None] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
        for member in archive.getmembers():
            if not (member.isfile() or member.issym()):
                continue
            name = os.path.normpath(member.name)
            wanted = (name in DEPENDENCY_FILES or _config(name)) and member.isfile()
            reader = archive.extractfile(member) if wanted else None
            found[name] = reader.read() if reader is not None else None
    return found
