"""Which package manager installs a project, at which version, with which command.

The lockfile decides the manager (``velocity.domain.package_managers.LOCKFILES``); a project with
none installs with npm. ``packageManager`` in package.json (``pnpm@9.15.9``, with or without its
``+sha512`` hash) decides the version when it names that manager; otherwise a default per lockfile
format. pnpm and yarn run through corepack (shipped with Node.js), bun through ``npm exec``: each is
fetched from the npm registry, the one host the machine's egress allows for installs, and kept in
npm's cache directory with their own caches, so the next preview finds them there.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from velocity.domain.errors import BadRequest
from velocity.domain.package_managers import INSTALLED_MARKER as MARKER
from velocity.domain.package_managers import LOCKFILES

NPM_FLAGS = ("--prefer-offline", "--no-audit", "--no-fund")
DEFAULT_NPM_REGISTRY = "https://registry.npmjs.org/"
# When packageManager names no version of the lockfile's manager.
DEFAULT_VERSIONS = {"pnpm": "9.15.9", "yarn": "1.22.22", "yarn-berry": "4.5.3", "bun": "1.2.23"}
PNPM_BY_LOCKFILE = {"9": "9.15.9", "6": "8.15.9", "5": "7.33.7"}  # lockfileVersion's major
_SPEC = re.compile(r"^(npm|pnpm|yarn|bun)@(\d+\.\d+\.\d+[0-9A-Za-z.+-]*)$")


@dataclass(frozen=True, slots=True)
class Manager:
    name: str  # npm, pnpm, yarn or bun
    version: str | None  # None: npm as installed on the machine
    lockfile: str | None

    @property
    def berry(self) -> bool:
        """Yarn 2 and later (a different tool from yarn 1, with its own flags and lockfile)."""
        return self.name == "yarn" and self.version is not None and not self.version.startswith("1.")

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name} {self.version.split('+')[0]}"


def detect(workspace: Path, package: Mapping[str, Any]) -> Manager:
    lockfile = next((name for name in LOCKFILES if (workspace / name).is_file()), None)
    if lockfile is None:
        return Manager("npm", None, None)
    name = LOCKFILES[lockfile]
    if name == "npm":
        return Manager("npm", None, lockfile)
    declared = _declared(package)
    if declared is not None and declared[0] == name:
        return Manager(name, declared[1], lockfile)
    return Manager(name, _default_version(name, workspace / lockfile), lockfile)


def _declared(package: Mapping[str, Any]) -> tuple[str, str] | None:
    spec = package.get("packageManager")
    if spec is None:
        return None
    found = _SPEC.match(spec) if isinstance(spec, str) else None
    if found is None:
        raise BadRequest(
            f'package.json\'s "packageManager" must look like "pnpm@9.15.9" (npm, pnpm, yarn or bun '
            f"with an exact version), not {str(spec)[:80]!r}"
        )
    return found.group(1), found.group(2)


def _default_version(name: str, lockfile: Path) -> str:
    head = lockfile.read_bytes()[:4096]
    if name == "yarn":
        return DEFAULT_VERSIONS["yarn-berry" if b"__metadata:" in head else "yarn"]
    if name == "pnpm":
        found = re.search(rb"lockfileVersion:\s*'?(\d+)", head)
        return PNPM_BY_LOCKFILE.get(found.group(1).decode() if found else "9", DEFAULT_VERSIONS["pnpm"])
    return DEFAULT_VERSIONS[name]


def install_argv(manager: Manager, *, fresh: bool) -> tuple[str, ...]:
    """The install, exactly as the lockfile says where there is one (``fresh``: no node_modules yet,
    so npm may use ``ci``, which would first delete a node_modules placed there)."""
    if manager.name == "npm":
        return ("npm", "ci" if manager.lockfile and fresh else "install", *NPM_FLAGS)
    assert manager.version is not None
    tool = f"{manager.name}@{manager.version}"
    if manager.name == "pnpm":
        return ("corepack", tool, "install", "--frozen-lockfile", "--prefer-offline")
    if manager.berry:
        return ("corepack", tool, "install", "--immutable")
    if manager.name == "yarn":
        return ("corepack", tool, "install", "--frozen-lockfile", "--prefer-offline", "--non-interactive")
    return ("npm", "exec", "--yes", f"--package={tool}", "--", "bun", "install", "--frozen-lockfile")


def install_env(manager: Manager, env: Mapping[str, str]) -> dict[str, str]:
    """The manager's settings: its download and cache beside npm's, every fetch from the npm
    registry (never repo.yarnpkg.com), through the machine's proxy, a node_modules tree for yarn 2+
    (Vite and the agent look there), no prompts and no telemetry."""
    if manager.name == "npm":
        return {}
    cache = env.get("NPM_CONFIG_CACHE") or env.get("npm_config_cache")
    registry = env.get("NPM_CONFIG_REGISTRY") or env.get("npm_config_registry") or DEFAULT_NPM_REGISTRY
    settings = {
        "COREPACK_ENABLE_DOWNLOAD_PROMPT": "0",
        "COREPACK_ENABLE_STRICT": "0",
        "COREPACK_NPM_REGISTRY": env.get("COREPACK_NPM_REGISTRY") or registry.rstrip("/"),
    }
    if cache:
        settings["COREPACK_HOME"] = f"{cache}/_corepack"
    if manager.name == "pnpm" and cache:
        settings["npm_config_store_dir"] = f"{cache}/_pnpm-store"
    if manager.name == "bun" and cache:
        settings["BUN_INSTALL_CACHE_DIR"] = f"{cache}/_bun"
    if manager.name == "yarn" and not manager.berry:
        settings["YARN_REGISTRY"] = registry
        if cache:
            settings["YARN_CACHE_FOLDER"] = f"{cache}/_yarn"
    if manager.berry:
        settings |= {
            "YARN_NPM_REGISTRY_SERVER": registry.rstrip("/"),
            "YARN_NODE_LINKER": "node-modules",
            "YARN_ENABLE_TELEMETRY": "0",
            "YARN_ENABLE_PROGRESS_BARS": "0",
            "YARN_ENABLE_GLOBAL_CACHE": "1",
        }
        if cache:
            settings["YARN_GLOBAL_FOLDER"] = f"{cache}/_yarn-berry"
        # Yarn 2+ reads its own proxy settings, not HTTP(S)_PROXY.
        for ours, yarns in (("HTTP_PROXY", "YARN_HTTP_PROXY"), ("HTTPS_PROXY", "YARN_HTTPS_PROXY")):
            if proxy := env.get(ours) or env.get(ours.lower()):
                settings[yarns] = proxy
    return settings


def prepare(manager: Manager, workspace: Path) -> None:
    """Before the install: a node_modules the agent can record its install in (some managers make
    it without the group's write bit the workspace is shared by). npm is left to make its own:
    ``npm ci`` removes an existing one first, and its own record suffices."""
    modules = workspace / "node_modules"
    if manager.name != "npm" and not modules.exists():
        modules.mkdir()
        modules.chmod(0o2775)


def digest(manager: Manager, workspace: Path, package: Mapping[str, Any]) -> str:
    """What decides the installed tree: the manager, package.json's dependencies, the lockfile."""
    kinds = ("dependencies", "devDependencies", "optionalDependencies", "peerDependencies")
    wanted = {kind: package.get(kind) or {} for kind in kinds}
    lock = (workspace / manager.lockfile).read_bytes() if manager.lockfile else b""
    text = json.dumps([str(manager), wanted], sort_keys=True).encode()
    return hashlib.sha256(text + b"\0" + lock).hexdigest()


def record_install(manager: Manager, workspace: Path, package: Mapping[str, Any]) -> None:
    """After an install succeeded: what node_modules now holds, for the next "anything to install?"."""
    modules = workspace / "node_modules"
    if modules.is_dir() and not modules.is_symlink():
        marker = {"manager": str(manager), "digest": digest(manager, workspace, package)}
        (modules / MARKER).write_text(json.dumps(marker) + "\n")


def recorded(manager: Manager, workspace: Path, package: Mapping[str, Any]) -> bool:
    """Whether node_modules holds what the agent installed for exactly these inputs."""
    try:
        marker = json.loads((workspace / "node_modules" / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("digest") == digest(manager, workspace, package)
