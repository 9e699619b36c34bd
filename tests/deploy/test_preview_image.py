"""What the preview image holds and in which order: the agent's own dependencies only, npm's cache
proved warm, and the agent's source as the last small layer, on the Python the agent needs."""

from __future__ import annotations

import importlib.metadata
import tomllib

import grimp
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from tests.deploy.deploy_files import PREVIEW_DOCKERFILE, ROOT, final_stage, instructions

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def agent_imports() -> set[str]:
    """Top-level third-party modules the agent imports, following its imports of our own modules."""
    graph = grimp.build_graph("velocity", include_external_packages=True)
    seen: set[str] = set()
    todo = [m for m in graph.modules if m == "velocity.agent" or m.startswith("velocity.agent.")]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(graph.find_modules_directly_imported_by(module))
    top = {m.split(".")[0] for m in seen}
    return {m for m in top if m in importlib.metadata.packages_distributions()} - {"velocity"}


def test_the_agent_extra_is_exactly_what_the_agent_imports() -> None:
    declared = {Requirement(r).name for r in PYPROJECT["project"]["optional-dependencies"]["agent"]}
    distributions = importlib.metadata.packages_distributions()
    needed = {distributions[module][0].lower() for module in agent_imports()}
    assert needed == declared, "pyproject's `agent` extra must list what velocity.agent imports"
    main = {Requirement(r).name for r in PYPROJECT["project"]["dependencies"]}
    assert declared <= main, "the orchestrator installs the agent's dependencies too"


def test_the_image_installs_the_agent_extra_and_none_of_the_orchestrator_s_dependencies() -> None:
    runs = " ".join(i.arguments for i in instructions(PREVIEW_DOCKERFILE) if i.keyword == "RUN")
    assert "['optional-dependencies']['agent']" in runs
    assert "['project']['dependencies']" not in runs
    assert "pip install --no-deps ." not in runs, "no build of the whole project into the image"


def test_source_edits_ship_one_small_layer_after_the_npm_warm_up() -> None:
    """Layers that hold npm's cache and the dependencies come before anything of src/; the source is
    the last COPY, so an edit re-runs nothing and ships only that layer."""
    stage = final_stage(PREVIEW_DOCKERFILE)
    warm_up = next(i for i, step in enumerate(stage) if step.keyword == "RUN" and "npm ci" in step.arguments)
    copies = [(i, step.arguments) for i, step in enumerate(stage) if step.keyword == "COPY"]
    source = [i for i, arguments in copies if "src/" in arguments]
    assert len(source) == 1 and source[0] > warm_up
    assert source[0] == copies[-1][0], "the source is the last COPY"


def test_the_npm_warm_up_proves_the_cache_holds_the_template() -> None:
    """`npm ci` can exit 0 with an empty cache; an offline install of the same lockfile cannot."""
    (warm_up,) = [
        s for s in final_stage(PREVIEW_DOCKERFILE) if s.keyword == "RUN" and "npm ci" in s.arguments
    ]
    installs = warm_up.arguments.split("npm ci")[1:]
    assert len(installs) == 2 and "--offline" in installs[1] and "--offline" not in installs[0]


def test_python_s_floor_is_the_first_release_the_agent_runs_on() -> None:
    """The agent unpacks snapshots with ``tarfile.data_filter``, new in 3.11.4: on 3.11.2 it would
    crash before /health answers, so the project says so."""
    assert "tarfile.data_filter" in (ROOT / "src/velocity/agent/snapshot.py").read_text()
    floor = SpecifierSet(PYPROJECT["project"]["requires-python"])
    assert "3.11.3" not in floor and "3.11.4" in floor and "3.12.0" in floor
