"""Which commands install a project and start its dev server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from velocity.agent.commands import dev_command, install_command
from velocity.domain.errors import BadRequest


def _project(root: Path, dev: str | None, *, vite: bool = False, lockfile: bool = False) -> Path:
    scripts = {"dev": dev} if dev is not None else {}
    (root / "package.json").write_text(json.dumps({"name": "p", "scripts": scripts}))
    if vite:
        (root / "node_modules/vite/bin").mkdir(parents=True)
        (root / "node_modules/vite/bin/vite.js").write_text("")
    if lockfile:
        (root / "package-lock.json").write_text("{}")
    return root


@pytest.mark.parametrize(
    ("script", "extra"),
    [
        ("vite", []),
        ("vite --mode staging", ["--mode", "staging"]),
        ("vite --host 0.0.0.0 --port=3000 --strictPort --mode x", ["--mode", "x"]),
        ("vite --host --mode x", ["--mode", "x"]),
    ],
)
def test_vite_runs_from_its_entry_file_on_the_agents_port(
    tmp_path: Path, script: str, extra: list[str]
) -> None:
    """A plain vite dev script runs as node vite.js, never npx, with the agent's host and port."""
    command = dev_command(_project(tmp_path, script, vite=True), 5173, {"AGENT_TOKEN": "t", "PATH": "/bin"})
    expected = ["node", "node_modules/vite/bin/vite.js", *extra, "--host", "127.0.0.1", "--port", "5173"]
    assert list(command.argv) == [*expected, "--strictPort"]
    assert "AGENT_TOKEN" not in command.env
    assert command.env["PATH"] == "/bin"


def test_the_project_s_code_inherits_only_what_a_project_needs(tmp_path: Path) -> None:
    """From a Fly machine's environment, npm and the dev server get the path, the proxy, npm's and
    the app's public settings; none of the agent's, Fly's or the orchestrator's."""
    machine = {
        "PATH": "/usr/local/bin:/usr/bin",
        "HOME": "/tmp",
        "HTTPS_PROXY": "http://127.0.0.1:3128",
        "NO_PROXY": "localhost",
        "NPM_CONFIG_REGISTRY": "https://registry.npmjs.org/",
        "SUPABASE_URL": "https://abc.supabase.co",
        "SUPABASE_ANON_KEY": "anon",
        "VITE_API_URL": "https://api.example.com",
        "AGENT_TOKEN": "t",
        "AGENT_ORIGIN_SECRET": "s",
        "AGENT_USER": "10001:10001",
        "SNAPSHOT_URL": "http://orchestrator.internal/v1/projects/p/snapshot",
        "FLY_API_TOKEN": "fly",
        "FLY_MACHINE_ID": "148e21ea7d1e89",
        "FLY_PRIVATE_IP": "fdaa:0:1::2",
        "DATABASE_URL": "postgresql://orchestrator",
        "PYTHONPATH": "/opt/velocity",
    }
    command = dev_command(_project(tmp_path, "vite", vite=True), 5173, machine)
    kept = {"PATH", "HOME", "HTTPS_PROXY", "NO_PROXY", "NPM_CONFIG_REGISTRY", "SUPABASE_URL"}
    kept |= {"SUPABASE_ANON_KEY", "VITE_API_URL"}
    assert {name for name in command.env if name in machine} == kept
    assert command.env["PORT"] == "5173"


@pytest.mark.parametrize(
    ("script", "vite"),
    [("node server.js", True), ("vite && echo done", True), ("vite", False), ("next dev && x", True)],
)
def test_anything_else_runs_as_npm_run_dev_with_port_and_host(
    tmp_path: Path, script: str, vite: bool
) -> None:
    """Other scripts, shell syntax, or vite missing from node_modules go through npm with PORT and HOST."""
    command = dev_command(_project(tmp_path, script, vite=vite), 4000, {})
    assert command.argv == ("npm", "run", "dev")
    assert (command.env["PORT"], command.env["HOST"]) == ("4000", "127.0.0.1")


@pytest.mark.parametrize(
    ("script", "flags"),
    [
        ("next dev", ("--port", "4000", "--hostname", "127.0.0.1")),
        ("next dev --turbopack", ("--port", "4000", "--hostname", "127.0.0.1")),
        ("astro dev", ("--port", "4000", "--host", "127.0.0.1")),
        ("nuxt dev", ("--port", "4000", "--host", "127.0.0.1")),
        ("ng serve", ("--port", "4000", "--host", "127.0.0.1")),
    ],
)
def test_frameworks_that_ignore_port_and_host_get_them_as_flags(
    tmp_path: Path, script: str, flags: tuple[str, ...]
) -> None:
    """Next.js, Astro, Nuxt and Angular get the port and address on their command line, after the
    dev script's own arguments (``docs/architecture.md``, "Dev servers")."""
    command = dev_command(_project(tmp_path, script), 4000, {})
    assert command.argv == ("npm", "run", "dev", "--", *flags)
    assert (command.env["PORT"], command.env["HOST"]) == ("4000", "127.0.0.1")


def test_a_project_without_a_dev_script_is_refused(tmp_path: Path) -> None:
    """No scripts.dev is a clear error naming what to add."""
    with pytest.raises(BadRequest, match='"dev" script'):
        dev_command(_project(tmp_path, None), 4000, {})


def test_a_lockfile_installs_with_npm_ci(tmp_path: Path) -> None:
    """A lockfile and no node_modules: npm ci, preferring the shared cache."""
    command = install_command(_project(tmp_path, "vite", lockfile=True), {})
    assert command is not None
    assert command.argv == ("npm", "ci", "--prefer-offline", "--no-audit", "--no-fund")


def test_an_existing_node_modules_is_kept(tmp_path: Path) -> None:
    """npm ci would delete a node_modules the provider placed; npm install keeps it."""
    command = install_command(_project(tmp_path, "vite", vite=True, lockfile=True), {})
    assert command is not None
    assert command.argv[:2] == ("npm", "install")


def test_no_package_json_means_nothing_to_install(tmp_path: Path) -> None:
    """Without package.json there is no install step."""
    assert install_command(tmp_path, {}) is None


def _installed_example(tmp_path: Path) -> Path:
    """A workspace whose node_modules npm has recorded as installing exactly the lockfile."""
    lock = {
        "name": "app",
        "lockfileVersion": 3,
        "packages": {
            "": {"name": "app", "dependencies": {"left-pad": "^1.3.0"}},
            "node_modules/left-pad": {"version": "1.3.0", "resolved": "https://r/left-pad.tgz"},
            "node_modules/fsevents": {"version": "2.3.3", "optional": True, "os": ["darwin"]},
        },
    }
    (tmp_path / "package.json").write_text(
        json.dumps({"name": "app", "dependencies": {"left-pad": "^1.3.0"}})
    )
    (tmp_path / "package-lock.json").write_text(json.dumps(lock))
    (tmp_path / "node_modules").mkdir()
    hidden = {
        "name": "app",
        "lockfileVersion": 3,
        "packages": {"node_modules/left-pad": lock["packages"]["node_modules/left-pad"]},
    }
    (tmp_path / "node_modules" / ".package-lock.json").write_text(json.dumps(hidden))
    return tmp_path


def test_no_install_runs_when_node_modules_already_match_the_lockfile(tmp_path: Path) -> None:
    """A node_modules linked from a kept install needs no npm at all (optional packages of other platforms aside)."""
    assert install_command(_installed_example(tmp_path), {}) is None


def test_an_install_runs_when_package_json_asks_for_something_new(tmp_path: Path) -> None:
    """A dependency added to package.json but not yet to the lockfile means npm install."""
    workspace = _installed_example(tmp_path)
    (workspace / "package.json").write_text(
        json.dumps({"name": "app", "dependencies": {"left-pad": "^1.3.0", "ms": "2"}})
    )
    command = install_command(workspace, {})
    assert command is not None
    assert command.argv[:2] == ("npm", "install")
