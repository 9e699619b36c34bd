"""Project uploads an attacker would make: escaping paths, links, devices, bombs, non-archives. Each
gets a 422 naming the problem, quickly, and leaves no project behind."""

from __future__ import annotations

import time

import pytest

from tests.api.conftest import Orchestrator
from tests.hostile.archives import HOSTILE


@pytest.mark.parametrize("name", list(HOSTILE))
async def test_a_hostile_archive_is_refused_quickly_and_leaves_nothing(
    orchestrator: Orchestrator, name: str
) -> None:
    """422 ``bad_request`` within a second or two; the project does not exist afterwards."""
    archive = HOSTILE[name]()
    start = time.monotonic()
    response = await orchestrator.client.put(
        "/v1/projects/evil",
        content=archive,
        headers={**orchestrator.auth(), "content-type": "application/gzip"},
    )
    took = time.monotonic() - start
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "bad_request"
    assert took < 2
    projects = await orchestrator.client.get("/v1/projects", headers=orchestrator.auth())
    assert projects.json()["projects"] == []
