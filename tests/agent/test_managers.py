"""Which package manager installs a project, at which version, with which command and settings."""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path
from typing import Any

import pytest

from velocity.agent import managers
from velocity.agent.commands import install_command
from velocity.agent.managers import Manager
from velocity.domain.errors import BadRequest
from velocity.projects.files import dependencies_key

MANAGED = Path(__file__).resolve().parents[1] / "e2e" / "projects" / "managers"


def project(root: Path, lockfile: str | None, text: str = "", **package: Any) -> Path:
    (root / "package.json").write_text(json.dumps({"name": "p", "scripts": {"dev": "vite"}, **package}))
    if lockfile is not None:
        (root / lockfile).write_text(text)
    return root


@pytest.mark.parametrize(
    ("lockfile", "text", "expected"),
    [
        (None, "", Manager("npm", None, None)),
        ("package-lock.json", "{}", Manager("npm", None, "package-lock.json")),
        ("npm-shrinkwrap.json", "{}", Manager("npm", None, "npm-shrinkwrap.json")),
        ("pnpm-lock.yaml", "lockfileVersion: '9.0'\n", Manager("pnpm", "9.15.9", "pnpm-lock.yaml")),
        ("pnpm-lock.yaml", "lockfileVersion: '6.0'\n", Manager("pnpm", "8.15.9", "pnpm-lock.yaml")),
        ("yarn.lock", "# yarn lockfile v1\n", Manager("yarn", "1.22.22", "yarn.lock")),
        ("yarn.lock", "__metadata:\n  version: 8\n", Manager("yarn", "4.5.3", "yarn.lock")),
        ("bun.lock", "{}", Manager("bun", "1.2.23", "bun.lock")),
        ("bun.lockb", "", Manager("bun", "1.2.23", "bun.lockb")),
    ],
)
def test_the_lockfile_names_the_manager_and_its_format_a_default_version(
    tmp_path: Path, lockfile: str | None, text: str, expected: Manager
) -> None:
    workspace = project(tmp_path, lockfile, text)
    assert managers.detect(workspace, json.loads((workspace / "package.json").read_text())) == expected


def test_package_manager_names_the_version_of_the_lockfile_s_manager(tmp_path: Path) -> None:
    """``packageManager`` (with corepack's hash, kept for corepack to check) pins the version; one
    that names another manager than the lockfile does is not followed."""
    project(tmp_path, "pnpm-lock.yaml", "lockfileVersion: '9.0'\n")
    pinned = {"packageManager": "pnpm@9.1.0+sha512.abcdef"}
    assert managers.detect(tmp_path, pinned) == Manager("pnpm", "9.1.0+sha512.abcdef", "pnpm-lock.yaml")
    assert str(managers.detect(tmp_path, pinned)) == "pnpm 9.1.0"
    assert managers.detect(tmp_path, {"packageManager": "yarn@4.5.3"}).version == "9.15.9"


@pytest.mark.parametrize("spec", ["pnpm", "pnpm@latest", "pnpm@^9", "deno@2.0.0", 7])
def test_a_package_manager_field_that_is_not_name_at_version_is_refused_by_name(
    tmp_path: Path, spec: object
) -> None:
    project(tmp_path, "pnpm-lock.yaml", "lockfileVersion: '9.0'\n")
    with pytest.raises(BadRequest, match=re.escape('"packageManager" must look like "pnpm@9.15.9"')):
        managers.detect(tmp_path, {"packageManager": spec})


def test_each_manager_installs_exactly_what_its_lockfile_says(tmp_path: Path) -> None:
    commands = {
        "pnpm": ("corepack", "pnpm@9.15.9", "install", "--frozen-lockfile", "--prefer-offline"),
        "yarn 1": (
            "corepack", "yarn@1.22.22", "install", "--frozen-lockfile", "--prefer-offline", "--non-interactive",
        ),
        "yarn 4": ("corepack", "yarn@4.5.3", "install", "--immutable"),
        "bun": ("npm", "exec", "--yes", "--package=bun@1.2.23", "--", "bun", "install", "--frozen-lockfile"),
    }  # fmt: skip
    cases = {
        "pnpm": Manager("pnpm", "9.15.9", "pnpm-lock.yaml"),
        "yarn 1": Manager("yarn", "1.22.22", "yarn.lock"),
        "yarn 4": Manager("yarn", "4.5.3", "yarn.lock"),
        "bun": Manager("bun", "1.2.23", "bun.lock"),
    }
    for name, manager in cases.items():
        assert managers.install_argv(manager, fresh=True) == commands[name]
    npm = Manager("npm", None, "package-lock.json")
    assert managers.install_argv(npm, fresh=True)[:2] == ("npm", "ci")
    assert managers.install_argv(npm, fresh=False)[:2] == ("npm", "install")


def test_managers_fetch_from_the_npm_registry_through_the_machine_s_proxy_and_keep_caches_beside_npm_s() -> (
    None
):
    machine = {
        "NPM_CONFIG_CACHE": "/cache/npm",
        "NPM_CONFIG_REGISTRY": "https://registry.npmjs.org/",
        "HTTPS_PROXY": "http://127.0.0.1:3128",
    }
    berry = managers.install_env(Manager("yarn", "4.5.3", "yarn.lock"), machine)
    assert berry["COREPACK_NPM_REGISTRY"] == "https://registry.npmjs.org"  # not repo.yarnpkg.com
    assert berry["YARN_NPM_REGISTRY_SERVER"] == "https://registry.npmjs.org"
    assert berry["YARN_HTTPS_PROXY"] == "http://127.0.0.1:3128"  # yarn 2+ ignores HTTPS_PROXY
    assert berry["YARN_NODE_LINKER"] == "node-modules"
    assert berry["COREPACK_HOME"] == "/cache/npm/_corepack"
    pnpm = managers.install_env(Manager("pnpm", "9.15.9", "pnpm-lock.yaml"), machine)
    assert pnpm["npm_config_store_dir"] == "/cache/npm/_pnpm-store"
    assert managers.install_env(Manager("npm", None, None), machine) == {}


def test_a_recorded_install_of_the_same_inputs_leaves_nothing_to_install(tmp_path: Path) -> None:
    """The agent records each finished install in node_modules; the same manager, dependencies and
    lockfile then install nothing, and a changed lockfile installs again."""
    workspace = project(tmp_path, "pnpm-lock.yaml", "lockfileVersion: '9.0'\n", dependencies={"a": "1"})
    package = json.loads((workspace / "package.json").read_text())
    command = install_command(workspace, {})
    assert command is not None and command.manager.name == "pnpm"
    managers.prepare(command.manager, workspace)
    assert (workspace / "node_modules").stat().st_mode & 0o2775 == 0o2775
    managers.record_install(command.manager, workspace, package)
    assert install_command(workspace, {}) is None
    (workspace / "pnpm-lock.yaml").write_text("lockfileVersion: '9.0'\n# changed\n")
    assert install_command(workspace, {}) is not None


@pytest.mark.parametrize("name", ["pnpm", "yarn-classic", "yarn-berry", "bun"])
def test_kept_node_modules_are_keyed_by_any_manager_s_lockfile(name: str) -> None:
    """The orchestrator keys a project's kept node_modules by package.json and its lockfile, for
    every manager (the fixtures the end-to-end tests preview)."""
    snapshot = io.BytesIO()
    with tarfile.open(fileobj=snapshot, mode="w:gz") as archive:
        for path in sorted((MANAGED / name).iterdir()):
            archive.add(path, arcname=path.name)
    key = dependencies_key(snapshot.getvalue())
    assert key is not None and len(key) == 64
