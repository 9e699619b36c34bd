"""The package managers a project may use, known by their lockfiles: the agent installs with the one
a project's lockfile names, and the orchestrator keys kept ``node_modules`` by that lockfile."""

from __future__ import annotations

from collections.abc import Mapping

# In the order they are looked for: a project with two lockfiles installs with the first.
LOCKFILES: Mapping[str, str] = {
    "package-lock.json": "npm",
    "npm-shrinkwrap.json": "npm",
    "pnpm-lock.yaml": "pnpm",
    "yarn.lock": "yarn",
    "bun.lock": "bun",
    "bun.lockb": "bun",
}
# Writing one of these means the dependencies may have changed: reinstall, then restart the dev server.
DEPENDENCY_FILES = frozenset({"package.json", *LOCKFILES})
# In node_modules, written by the agent after each finished install: which inputs it installed.
INSTALLED_MARKER = ".velocity-installed.json"
