"""Projects locked by pnpm, yarn 1, yarn 4 and bun, previewed in real sandboxes: each installs with
the manager and version its lockfile and ``packageManager`` name (fetched from the npm registry
through the sandbox's egress, the only way out), serves a page that needs the installed package, and
the owner's next preview of it starts from the kept node_modules with nothing to install.

The fixtures (tests/e2e/projects/managers) were made by the managers themselves: ``pnpm install
--lockfile-only``, ``yarn install`` (1.22.22 and 4.5.3), ``bun install --lockfile-only``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.harness import PROJECTS, Live

pytestmark = pytest.mark.e2e

MANAGERS = PROJECTS / "managers"
CASES = {  # the manager as the agent names it, and the start of its command
    "pnpm": ("pnpm 9.15.9", "corepack pnpm@9.15.9 install --frozen-lockfile"),
    "yarn-classic": ("yarn 1.22.22", "corepack yarn@1.22.22 install --frozen-lockfile"),
    "yarn-berry": ("yarn 4.5.3", "corepack yarn@4.5.3 install --immutable"),
    "bun": ("bun 1.2.23", "npm exec --yes --package=bun@1.2.23 -- bun install --frozen-lockfile"),
}


@pytest.fixture(scope="module", autouse=True)
def registry_signatures() -> Iterator[None]:
    """Corepack checks each manager it downloads against the registry's signatures. The registry
    this machine reaches may be a mirror that serves none (no ``dist.signatures``), and then corepack
    refuses every download: only there, its check is turned off (``COREPACK_INTEGRITY_KEYS=0``)."""
    registry = subprocess.run(
        ["npm", "config", "get", "registry"], capture_output=True, text=True, check=True
    ).stdout.strip()
    meta = httpx.get(f"{registry.rstrip('/')}/pnpm/9.15.9", timeout=30).json()
    with pytest.MonkeyPatch.context() as patch:
        if not meta["dist"].get("signatures"):
            patch.setenv("COREPACK_INTEGRITY_KEYS", "0")
        yield


@pytest.mark.parametrize("project", list(CASES))
async def test_a_project_installs_with_the_manager_its_lockfile_names(live: Live, project: str) -> None:
    project_id = f"managed-{project}"
    await live.import_project(MANAGERS / project, project_id)
    ready = await live.settled((await live.create(project_id))["id"])
    assert ready["state"] == "ready", "\n".join(await lines(live, ready["id"]))
    page = await live.fetch(ready["id"])
    assert page.status_code == 200 and "is-number says true" in page.text, page.text
    logs = await lines(live, ready["id"])
    manager, command = CASES[project]
    started = [line for line in logs if line.startswith(f"started the install with {manager} (pid ")]
    assert len(started) == 1 and f"): {command}" in started[0], "\n".join(logs)

    stopped = await live.api.delete(f"/v1/previews/{ready['id']}")
    assert stopped.status_code == 200, stopped.text
    again = await live.settled((await live.create(project_id))["id"])
    assert again["state"] == "ready", again["failure_reason"]
    assert "is-number says true" in (await live.fetch(again["id"])).text
    logs = await lines(live, again["id"])
    assert any("nothing to install" in line for line in logs), "\n".join(logs)
    assert not any("started the install" in line for line in logs), "\n".join(logs)


async def lines(live: Live, preview_id: str) -> list[str]:
    answer = (await live.api.get(f"/v1/previews/{preview_id}/logs")).json()
    return [str(line["line"]) for line in answer["lines"]]
