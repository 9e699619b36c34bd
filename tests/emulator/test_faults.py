"""Faults by configuration, authentication and Fly's rate limits, as the emulator answers them."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.fly.support import TOKEN, InstantClock, emulator_http
from velocity.domain import ConfigError
from velocity.emulator import Faults, FlyEmulator

IMAGE = "ghcr.io/velocity/preview-container:1.0.0"
BODY = {"config": {"image": IMAGE}, "region": "ord"}


async def test_throttled_calls_answer_429_with_retry_after(
    emulator: FlyEmulator, http: httpx.AsyncClient, machines: str
) -> None:
    """``throttle_next`` answers that many calls with 429 and the configured ``Retry-After``."""
    emulator.faults = Faults(enforce_rate_limits=False, throttle_next=2, retry_after=7)
    answers = [await http.get(machines) for _ in range(3)]
    assert [a.status_code for a in answers] == [429, 429, 200]
    assert answers[0].headers["retry-after"] == "7"
    assert answers[0].json() == {"error": "rate limit exceeded"}


async def test_server_errors_hit_only_the_configured_actions(
    emulator: FlyEmulator, http: httpx.AsyncClient, machines: str
) -> None:
    """``actions`` narrows the counted faults: here creates fail with 502, lists do not."""
    emulator.faults = Faults(
        enforce_rate_limits=False,
        server_errors_next=1,
        server_error_status=502,
        actions=frozenset({"create"}),
    )
    assert (await http.get(machines)).status_code == 200
    assert (await http.post(machines, json=BODY)).status_code == 502
    assert (await http.post(machines, json=BODY)).status_code == 200


async def test_slow_answers_wait_on_the_emulator_clock(
    emulator: FlyEmulator, clock: InstantClock, http: httpx.AsyncClient, machines: str
) -> None:
    """``slow_seconds`` delays every answer by that long."""
    emulator.faults = Faults(enforce_rate_limits=False, slow_seconds=2.5)
    before = clock.now()
    await http.get(machines)
    assert (clock.now() - before).total_seconds() == 2.5


async def test_a_full_region_answers_insufficient_capacity(
    emulator: FlyEmulator, http: httpx.AsyncClient, machines: str
) -> None:
    """Creates in a full region get 422 with ``status: insufficient_capacity``; other regions work."""
    emulator.faults = Faults(enforce_rate_limits=False, full_regions=frozenset({"ord"}))
    full = await http.post(machines, json=BODY)
    assert full.status_code == 422
    assert full.json()["status"] == "insufficient_capacity"
    assert (await http.post(machines, json={**BODY, "region": "iad"})).status_code == 200


async def test_a_lost_create_makes_the_machine_but_answers_504(
    emulator: FlyEmulator, http: httpx.AsyncClient, machines: str
) -> None:
    """The machine exists and is listed, though the create's answer was a gateway timeout."""
    emulator.faults = Faults(enforce_rate_limits=False, lost_creates_next=1)
    body = {**BODY, "config": {"image": IMAGE, "metadata": {"tag": "t1"}}}
    assert (await http.post(machines, json=body)).status_code == 504
    assert len((await http.get(machines, params={"metadata.tag": "t1"})).json()) == 1


async def test_a_failing_image_ends_in_failed(
    emulator: FlyEmulator, http: httpx.AsyncClient, machines: str
) -> None:
    """Machines of a ``failing_images`` image fail to boot, with an exit event saying why."""
    emulator.faults = Faults(enforce_rate_limits=False, failing_images=frozenset({IMAGE}))
    machine = (await http.post(machines, json=BODY)).json()
    answer = await http.get(
        f"{machines}/{machine['id']}/wait", params=[("state", "started"), ("state", "failed")]
    )
    assert answer.json()["state"] == "failed"
    events = (await http.get(f"{machines}/{machine['id']}")).json()["events"]
    assert events[0]["type"] == "exit"


async def test_fly_rate_limits_allow_a_burst_of_three_then_one_a_second(
    emulator: FlyEmulator, clock: InstantClock, http: httpx.AsyncClient, machines: str
) -> None:
    """Per action and app: three creates at once pass, the fourth gets 429, a second later one more passes."""
    emulator.faults = Faults()
    statuses = [(await http.post(machines, json=BODY)).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    assert (await http.get(machines)).status_code == 200  # another action has its own bucket
    clock.advance(1.0)
    assert (await http.post(machines, json=BODY)).status_code == 200
    assert emulator.stats.rate_limited["create"] == 1


async def test_getting_a_machine_is_allowed_ten_at_once(
    emulator: FlyEmulator, http: httpx.AsyncClient, machines: str
) -> None:
    """Get Machine has the larger limit: burst 10, then 429 with ``Retry-After``."""
    machine = (await http.post(machines, json=BODY)).json()
    emulator.faults = Faults()
    statuses = [(await http.get(f"{machines}/{machine['id']}")).status_code for _ in range(11)]
    assert statuses == [200] * 10 + [429]


async def test_calls_without_a_valid_token_are_401(emulator: FlyEmulator, machines: str) -> None:
    """No header, an unknown scheme or an unknown token: 401 in Fly's error shape."""
    async with emulator_http(emulator, check_requests=False) as http:
        for authorization in (None, "Basic abc", f"Bearer {TOKEN}x"):
            headers = {"authorization": authorization} if authorization else {}
            response = await http.get(machines, headers=headers)
            assert response.status_code == 401
            assert "error" in response.json()


async def test_macaroon_tokens_are_accepted_with_the_flyv1_scheme(
    emulator: FlyEmulator, machines: str
) -> None:
    """fly-go sends ``FlyV1 <macaroon>``; the spec only names Bearer."""
    async with emulator_http(emulator, check_requests=False) as http:
        assert (await http.get(machines, headers={"authorization": f"FlyV1 {TOKEN}"})).status_code == 200


async def test_an_unknown_app_is_a_404(http: httpx.AsyncClient) -> None:
    """Machines of an app that does not exist: 404."""
    assert (await http.get("/v1/apps/nope/machines")).status_code == 404


async def test_faults_are_read_from_a_json_file(tmp_path: Path) -> None:
    """Lists become sets; unknown keys are refused with the known ones named."""
    path = tmp_path / "faults.json"
    path.write_text(json.dumps({"throttle_next": 3, "full_regions": ["ord", "iad"]}))
    assert Faults.from_file(path) == Faults(throttle_next=3, full_regions=frozenset({"ord", "iad"}))
    path.write_text(json.dumps({"throttle": 3}))
    with pytest.raises(ConfigError, match="throttle_next"):
        Faults.from_file(path)


async def test_faults_can_be_changed_on_a_running_emulator(
    emulator: FlyEmulator, http: httpx.AsyncClient
) -> None:
    """``PUT /_emulator/faults`` replaces them; ``GET /_emulator/stats`` counts calls and statuses."""
    response = await http.put("/_emulator/faults", json={"enforce_rate_limits": False, "throttle_next": 1})
    assert response.status_code == 204
    assert emulator.faults.throttle_next == 1
    assert (await http.put("/_emulator/faults", json={"bogus": 1})).status_code == 400
    stats = (await http.get("/_emulator/stats")).json()
    assert stats["calls"] == {}


async def test_apps_are_created_once_by_name_or_app_name(http: httpx.AsyncClient) -> None:
    """201 with ``name`` (spec) or ``app_name`` (docs); a taken name is 422 ``name_taken``; org is required."""
    created = await http.post("/v1/apps", json={"name": "other-app", "org_slug": "personal"})
    assert created.status_code == 201
    assert isinstance(created.json()["created_at"], int)
    taken = await http.post("/v1/apps", json={"name": "other-app", "org_slug": "personal"})
    assert (taken.status_code, taken.json()["status"]) == (422, "name_taken")
    assert (await http.post("/v1/apps", json={"name": "third"})).status_code == 400
    assert (await http.get("/v1/apps/other-app")).json()["name"] == "other-app"
    assert "other-app" in [
        a["name"] for a in (await http.get("/v1/apps", params={"org_slug": "personal"})).json()["apps"]
    ]


async def test_apps_created_by_app_name_as_the_docs_spell_it(lenient_http: httpx.AsyncClient) -> None:
    """The docs' examples send ``app_name``."""
    created = await lenient_http.post("/v1/apps", json={"app_name": "docs-app", "org_slug": "personal"})
    assert created.status_code == 201


async def test_deleting_an_app_destroys_its_machines(
    emulator: FlyEmulator, http: httpx.AsyncClient, machines: str
) -> None:
    """202, and its machines go with it."""
    machine = (await http.post(machines, json=BODY)).json()
    assert (await http.delete("/v1/apps/velocity-preview-containers")).status_code == 202
    await emulator.fleet.wait(
        emulator.fleet.machines[machine["id"]], frozenset({"destroyed"}), after_event=None
    )
