"""Which commands install a project and start its dev server."""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from velocity.agent import managers
from velocity.agent.managers import Manager
from velocity.domain.errors import BadRequest

VITE_ENTRY = "node_modules/vite/bin/vite.js"
# Shell syntax in a dev script means it is more than one vite invocation: let npm run it as written.
_SHELL_SYNTAX = frozenset("&|;<>()$`")
# Flags the agent sets itself; a second copy would make Vite's argument parser return a list.
_OWNED_VALUE_FLAGS = ("--host", "--port")
_OWNED_FLAGS = ("--strictPort", "--strict-port")
# Dev servers that do not take their port and address from PORT and HOST, by the dev script's first
# word, and the flags that tell them (appended: ``npm run dev -- ...``; a flag given twice, the last
# wins in each of these). Vite's own (and Vite's frameworks: SvelteKit, Vue, Remix, Solid) are set
# above; Next.js reads PORT but not HOST; Create React App reads both.
FRAMEWORK_FLAGS: Mapping[str, tuple[str, ...]] = {
    "next": ("--port", "{port}", "--hostname", "{host}"),
    "astro": ("--port", "{port}", "--host", "{host}"),
    "nuxt": ("--port", "{port}", "--host", "{host}"),
    "nuxi": ("--port", "{port}", "--host", "{host}"),
    "ng": ("--port", "{port}", "--host", "{host}"),
    "webpack": ("--port", "{port}", "--host", "{host}"),
    "webpack-dev-server": ("--port", "{port}", "--host", "{host}"),
}


@dataclass(frozen=True, slots=True)
class Command:
    argv: tuple[str, ...]
    env: Mapping[str, str]

    def __str__(self) -> str:
        return shlex.join(self.argv)


# What the project's code inherits from the machine's environment, and nothing else: not the agent's
# settings and credentials (AGENT_*, SNAPSHOT_URL), not Fly's (FLY_*), not the orchestrator's.
CHILD_VARIABLES = frozenset(
    {
        "PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TERM", "USER", "LOGNAME", "SHELL", "TMPDIR",
        "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
        "NODE_USE_ENV_PROXY", "NODE_ENV", "NODE_OPTIONS", "NODE_EXTRA_CA_CERTS",
        "SSL_CERT_FILE", "SSL_CERT_DIR", "CI",
        "SUPABASE_URL", "SUPABASE_ANON_KEY", "PROJECT_ID", "PREVIEW_ID",
    }
)  # fmt: skip
# Package managers' settings, locales, and the variables frameworks show the browser.
CHILD_PREFIXES = (
    "LC_", "NPM_CONFIG_", "npm_config_", "COREPACK_", "YARN_", "BUN_", "VITE_", "NEXT_PUBLIC_", "PUBLIC_",
)  # fmt: skip


def child_env(base: Mapping[str, str]) -> dict[str, str]:
    """What npm and the dev server start with: the machine's environment reduced to
    ``CHILD_VARIABLES`` and ``CHILD_PREFIXES``, so user code sees none of the agent's settings."""
    env = {
        name: value
        for name, value in base.items()
        if name in CHILD_VARIABLES or name.startswith(CHILD_PREFIXES)
    }
    # npm would otherwise ask the registry whether a newer npm exists, on every start.
    env["npm_config_update_notifier"] = "false"
    return env


def read_package(workspace: Path) -> dict[str, Any] | None:
    path = workspace / "package.json"
    try:
        package = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise BadRequest(f"package.json is not valid JSON: {exc}") from exc
    if not isinstance(package, dict):
        raise BadRequest("package.json must hold a JSON object")
    return package


@dataclass(frozen=True, slots=True)
class Install(Command):
    manager: Manager


def install_command(workspace: Path, env: Mapping[str, str]) -> Install | None:
    """The install with the project's package manager (``managers``), nothing without a
    package.json or when node_modules holds what it would install. npm: ``npm ci`` from a lockfile
    into an empty node_modules, ``npm install`` otherwise (``npm ci`` deletes node_modules first, so a
    node_modules the provider placed there already, hard-linked from a warm copy, is kept)."""
    package = read_package(workspace)
    if package is None:
        return None
    manager = managers.detect(workspace, package)
    if dependencies_installed(workspace, package, manager):
        return None
    argv = managers.install_argv(manager, fresh=not (workspace / "node_modules").exists())
    return Install(argv, child_env(env) | managers.install_env(manager, env), manager)


def nothing_to_install(workspace: Path) -> str:
    """Why ``install_command`` gave nothing, for the log."""
    if not (workspace / "package.json").exists():
        return "no package.json: nothing to install"
    return "node_modules holds what the lockfile asks for: nothing to install"


def dependencies_installed(
    workspace: Path, package: Mapping[str, Any], manager: Manager | None = None
) -> bool:
    """Whether node_modules already holds exactly what the lockfile asks for, so even a no-op
    install (about 300 ms with npm) can be skipped: the agent's record of its last install there
    (``managers.recorded``) is of the same inputs, or, for npm, npm's own record of what it installed
    (``node_modules/.package-lock.json``) matches the lockfile, leaving out only optional packages for
    other platforms, and package.json asks for what the lockfile was made from."""
    manager = manager or managers.detect(workspace, package)
    if manager.lockfile is not None and managers.recorded(manager, workspace, package):
        return True
    if manager.name != "npm":
        return False
    try:
        lock = json.loads((workspace / "package-lock.json").read_text())
        installed = json.loads((workspace / "node_modules" / ".package-lock.json").read_text())
    except (OSError, ValueError):
        return False
    wanted = {k: v for k, v in lock.get("packages", {}).items() if k}
    present = installed.get("packages", {})
    if any(wanted.get(name) != entry for name, entry in present.items()):
        return False
    if any(not entry.get("optional") for name, entry in wanted.items() if name not in present):
        return False
    root = lock.get("packages", {}).get("", {})
    kinds = ("dependencies", "devDependencies", "optionalDependencies", "peerDependencies")
    return all((package.get(kind) or {}) == (root.get(kind) or {}) for kind in kinds)


def dev_command(workspace: Path, port: int, env: Mapping[str, str]) -> Command:
    """Vite runs from its own entry file (``npx`` or ``npm run`` would add about 250 ms and 76 MB);
    anything else runs as ``npm run dev`` with ``PORT`` and ``HOST`` set, and the port and address
    flags of the frameworks that ignore them (``FRAMEWORK_FLAGS``)."""
    package = read_package(workspace)
    if package is None:
        raise BadRequest("the project has no package.json, so there is no dev server to start")
    scripts = package.get("scripts")
    script = scripts.get("dev") if isinstance(scripts, dict) else None
    if not isinstance(script, str) or not script.strip():
        raise BadRequest('package.json has no "dev" script: add one that starts the dev server')
    base = child_env(env) | {"PORT": str(port), "HOST": "127.0.0.1", "BROWSER": "none"}
    words = _plain_command(script)
    if words is not None and words[0] == "vite" and (workspace / VITE_ENTRY).is_file():
        args = (*_without_owned_flags(words[1:]), "--host", "127.0.0.1", "--port", str(port), "--strictPort")
        return Command(("node", VITE_ENTRY, *args), base)
    flags = FRAMEWORK_FLAGS.get(words[0]) if words is not None else None
    if flags is not None:
        extra = tuple(flag.format(port=port, host="127.0.0.1") for flag in flags)
        return Command(("npm", "run", "dev", "--", *extra), base)
    return Command(("npm", "run", "dev"), base)


def dev_program(workspace: Path) -> str | None:
    """The program the dev script runs (``vite``, ``next``...), when it is one command."""
    package = read_package(workspace)
    scripts = package.get("scripts") if package else None
    script = scripts.get("dev") if isinstance(scripts, dict) else None
    words = _plain_command(script) if isinstance(script, str) else None
    return words[0] if words else None


def _plain_command(script: str) -> list[str] | None:
    """The dev script's words when it is one command (no shell syntax), else None."""
    if _SHELL_SYNTAX.intersection(script):
        return None
    try:
        words = shlex.split(script)
    except ValueError:
        return None
    return words or None


def _without_owned_flags(args: list[str]) -> list[str]:
    kept: list[str] = []
    skip_value = False
    for arg in args:
        if skip_value:
            skip_value = False
            if not arg.startswith("-"):
                continue
        if arg in _OWNED_VALUE_FLAGS:
            skip_value = True  # its value, if any, is the next word
        elif arg.startswith(tuple(f"{flag}=" for flag in _OWNED_VALUE_FLAGS)) or arg in _OWNED_FLAGS:
            continue
        else:
            kept.append(arg)
    return kept
