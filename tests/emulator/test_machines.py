"""The emulator's machine endpoints: status codes, shapes and state transitions as Fly has them.

Every exchange goes through ``SpecCheckingTransport``: a response that drifts from the spec fails here.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import httpx
import pytest

from velocity.emulator import FlyEmulator

IMAGE = "ghcr.io/velocity/preview-container:1.0.0"
CONFIG: dict[str, Any] = {
    "image": IMAGE,
    "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 512},
    "metadata": {"velocity_owner": "velocity-previews", "project_id": "p1"},
    "services": [
        {"protocol": "tcp", "internal_port": 8080, "ports": [{"port": 443, "handlers": ["tls", "http"]}]}
    ],
}


async def create(http: httpx.AsyncClient, machines: str, **extra: Any) -> dict[str, Any]:
    body = {"config": extra.pop("config", CONFIG), "region": "ord", **extra}
    response = await http.post(machines, json=body)
    assert response.status_code == 200, response.text
    machine: dict[str, Any] = response.json()
    return machine


async def wait(
    http: httpx.AsyncClient, machines: str, machine_id: str, *states: str, timeout: int = 5
) -> httpx.Response:
    params = (*(("state", s) for s in states), ("timeout", str(timeout)))
    return await http.get(f"{machines}/{machine_id}/wait", params=params)


async def test_create_answers_200_with_a_created_machine_carrying_fly_shaped_ids(
    http: httpx.AsyncClient, machines: str
) -> None:
    """200 (not 201), state created, a 14-hex id, a 26-character ULID version equal to instance_id."""
    machine = await create(http, machines)
    assert machine["state"] == "created"
    assert re.fullmatch(r"[0-9a-f]{14}", machine["id"])
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{26}", machine["version"])
    assert machine["instance_id"] == machine["version"]
    # An IPv6 address in the organisation's 6PN /48, eight groups as Fly writes them.
    assert ipaddress.IPv6Address(machine["private_ip"]) in ipaddress.IPv6Network("fdaa:0:1::/48")
    assert len(machine["private_ip"].split(":")) == 8
    assert machine["events"][0]["type"] == "launch"
    assert machine["config"]["init"] == {}


async def test_a_created_machine_starts_on_its_own_and_records_its_events(
    http: httpx.AsyncClient, machines: str
) -> None:
    """created → starting → started, with the newest event first."""
    machine = await create(http, machines)
    answer = await wait(http, machines, machine["id"], "started")
    assert answer.json()["state"] == "started"
    events = (await http.get(f"{machines}/{machine['id']}")).json()["events"]
    assert [e["status"] for e in events] == ["started", "starting", "created"]
    assert answer.json()["event_id"] == events[0]["id"]


async def test_skip_launch_leaves_the_machine_created_until_started(
    http: httpx.AsyncClient, machines: str
) -> None:
    """``skip_launch`` creates without booting; ``start`` boots it and reports the previous state."""
    machine = await create(http, machines, skip_launch=True)
    assert (await wait(http, machines, machine["id"], "started", timeout=1)).status_code == 408
    started = await http.post(f"{machines}/{machine['id']}/start")
    assert started.json()["previous_state"] == "created"
    assert (await wait(http, machines, machine["id"], "started")).status_code == 200


async def test_an_unknown_machine_is_a_404_in_fly_error_shape(http: httpx.AsyncClient, machines: str) -> None:
    """``{"error": ...}`` with 404 on get, wait and stop alike."""
    for response in (
        await http.get(f"{machines}/0123456789abcd"),
        await http.get(f"{machines}/0123456789abcd/wait"),
        await http.post(f"{machines}/0123456789abcd/stop"),
    ):
        assert response.status_code == 404
        assert "error" in response.json()


async def test_wait_times_out_with_408(http: httpx.AsyncClient, machines: str) -> None:
    """A state not reached within ``timeout`` seconds answers 408."""
    machine = await create(http, machines)
    response = await wait(http, machines, machine["id"], "stopped", timeout=1)
    assert response.status_code == 408
    assert "deadline_exceeded" in response.json()["error"]


@pytest.mark.parametrize("spelling", [["stopped", "started"], ["stopped,started"]])
async def test_wait_takes_states_repeated_or_comma_separated(
    lenient_http: httpx.AsyncClient, machines: str, spelling: list[str]
) -> None:
    """``state=a&state=b`` (fly-go) and ``state=a,b`` (the spec's description; its enum disagrees) both work."""
    http = lenient_http
    machine = await create(http, machines)
    params = (*(("state", s) for s in spelling), ("timeout", "5"))
    response = await http.get(f"{machines}/{machine['id']}/wait", params=params)
    assert response.json()["state"] == "started"


async def test_wait_rejects_a_state_it_does_not_know(lenient_http: httpx.AsyncClient, machines: str) -> None:
    """Only started, stopped, suspended, destroyed, failed and settled can be waited for: 400 otherwise."""
    http = lenient_http
    machine = await create(http, machines)
    response = await http.get(f"{machines}/{machine['id']}/wait", params={"state": "created"})
    assert response.status_code == 400


async def test_wait_from_an_event_ignores_states_reached_before_it(
    http: httpx.AsyncClient, machines: str
) -> None:
    """After a stop, waiting for ``started`` from the stop's event waits for the next start."""
    machine = await create(http, machines)
    await wait(http, machines, machine["id"], "started")
    await http.post(f"{machines}/{machine['id']}/stop")
    await wait(http, machines, machine["id"], "stopped")
    stop_event = (await http.get(f"{machines}/{machine['id']}")).json()["events"][0]["id"]
    params = {"state": "stopped", "from_event_id": stop_event, "timeout": "1"}
    assert (await http.get(f"{machines}/{machine['id']}/wait", params=params)).status_code == 408
    events = (await http.get(f"{machines}/{machine['id']}")).json()["events"]
    params = {"state": "stopped", "from_event_id": events[-2]["id"], "timeout": "1"}
    answer = await http.get(f"{machines}/{machine['id']}/wait", params=params)
    assert answer.json().get("state") == "stopped", (answer.text, events)


async def test_wait_for_settled_returns_whichever_resting_state_comes(
    http: httpx.AsyncClient, machines: str
) -> None:
    """``settled`` is any resting state; the answer names it."""
    machine = await create(http, machines)
    assert (await wait(http, machines, machine["id"], "settled")).json()["state"] in ("created", "started")


async def test_list_filters_by_metadata_state_region_and_hides_destroyed(
    http: httpx.AsyncClient, machines: str
) -> None:
    """``metadata.k=v`` filters AND together; destroyed machines need ``include_deleted``."""
    a = await create(http, machines)
    b = await create(http, machines, config={**CONFIG, "metadata": {"project_id": "p2"}})
    await wait(http, machines, b["id"], "started")
    await http.delete(f"{machines}/{b['id']}", params={"force": "true"})
    await wait(http, machines, b["id"], "destroyed")

    def ids(response: httpx.Response) -> list[str]:
        return [m["id"] for m in response.json()]

    assert ids(await http.get(machines, params={"metadata.project_id": "p1"})) == [a["id"]]
    assert ids(await http.get(machines, params={"metadata.project_id": "p2"})) == []
    assert ids(await http.get(machines, params={"metadata.project_id": "p2", "include_deleted": "true"})) == [
        b["id"]
    ]
    assert ids(await http.get(machines, params={"region": "iad"})) == []
    assert (await http.get(machines, params={"state": "running"})).status_code == 400


async def test_a_summary_list_leaves_out_config_and_events(http: httpx.AsyncClient, machines: str) -> None:
    """``summary=true`` omits config, checks and events."""
    await create(http, machines)
    [machine] = (await http.get(machines, params={"summary": "true"})).json()
    assert "config" not in machine and "events" not in machine
    assert machine["state"] in ("created", "starting", "started")


async def test_a_limited_list_pages_with_the_fly_next_cursor_header(
    http: httpx.AsyncClient, machines: str
) -> None:
    """``limit`` enables pages; the cursor header is absent on the last one."""
    made = [(await create(http, machines))["id"] for _ in range(3)]
    first = await http.get(machines, params={"limit": "2"})
    cursor = first.headers["fly-next-cursor"]
    second = await http.get(machines, params={"limit": "2", "cursor": cursor})
    assert "fly-next-cursor" not in second.headers
    assert [m["id"] for m in first.json() + second.json()] == made


async def test_destroying_a_running_machine_needs_force_or_flygo_kill(
    http: httpx.AsyncClient, machines: str
) -> None:
    """Without ``force`` a started machine answers 412; ``force=true`` (docs) or ``kill=true`` (fly-go) work."""
    for flag in ("force", "kill"):
        machine = await create(http, machines)
        await wait(http, machines, machine["id"], "started")
        assert (await http.delete(f"{machines}/{machine['id']}")).status_code == 412
        assert (await http.delete(f"{machines}/{machine['id']}", params={flag: "true"})).status_code == 200
        assert (await wait(http, machines, machine["id"], "destroyed")).json()["state"] == "destroyed"
        assert (await http.get(f"{machines}/{machine['id']}")).status_code == 404


@pytest.mark.parametrize("signal", ["SIGTERM", "TERM", 15, "15", "sigint"])
async def test_stop_takes_signals_by_name_or_number(
    lenient_http: httpx.AsyncClient, machines: str, signal: object
) -> None:
    """Signal names, short names and numbers are all one signal."""
    http = lenient_http
    machine = await create(http, machines)
    await wait(http, machines, machine["id"], "started")
    response = await http.post(f"{machines}/{machine['id']}/stop", json={"signal": signal, "timeout": "3s"})
    assert response.status_code == 200
    assert (await wait(http, machines, machine["id"], "stopped")).json()["state"] == "stopped"


async def test_stop_accepts_a_timeout_in_nanoseconds_and_rejects_an_array_body(
    lenient_http: httpx.AsyncClient, machines: str
) -> None:
    """Durations come as strings or Go nanoseconds; a JSON array gets Go's decoding error as a 400."""
    http = lenient_http
    machine = await create(http, machines)
    assert (
        await http.post(f"{machines}/{machine['id']}/stop", json={"timeout": 2_000_000_000})
    ).status_code == 200
    bad = await http.post(f"{machines}/{machine['id']}/stop", content=b"[]")
    assert bad.status_code == 400
    assert bad.json()["error"] == "json: cannot unmarshal array into Go value of type main.stopRequest"


async def test_autostop_and_durations_come_back_as_fly_sends_them(
    lenient_http: httpx.AsyncClient, machines: str
) -> None:
    """``autostop`` off/stop answer as false/true, suspend as a string; nanoseconds as duration strings."""
    http = lenient_http
    check = {"type": "http", "path": "/health", "interval": 15_000_000_000, "timeout": "2s"}
    services = [
        {"internal_port": 8080, "autostop": "off", "checks": [check]},
        {"internal_port": 8081, "autostop": True},
        {"internal_port": 8082, "autostop": "suspend"},
    ]
    machine = await create(
        http, machines, config={**CONFIG, "services": services, "stop_config": {"timeout": 90_000_000_000}}
    )
    rendered = machine["config"]["services"]
    assert [s["autostop"] for s in rendered] == [False, True, "suspend"]
    assert rendered[0]["checks"][0]["interval"] == "15s"
    assert machine["config"]["stop_config"]["timeout"] == "1m30s"


async def test_a_config_without_an_image_is_a_400(http: httpx.AsyncClient, machines: str) -> None:
    """The image is the one required field of a machine config."""
    response = await http.post(machines, json={"config": {"env": {}}})
    assert response.status_code == 400


async def test_an_update_with_a_stale_version_conflicts(http: httpx.AsyncClient, machines: str) -> None:
    """``current_version`` guards the update: 409 once it moved on; the old version reads as replaced."""
    machine = await create(http, machines)
    path = f"{machines}/{machine['id']}"
    updated = await http.post(path, json={"config": CONFIG, "current_version": machine["version"]})
    assert updated.status_code == 200
    assert updated.json()["version"] != machine["version"]
    stale = await http.post(path, json={"config": CONFIG, "current_version": machine["version"]})
    assert stale.status_code == 409
    old = await http.get(path, params={"version": machine["version"]})
    assert old.json()["state"] == "replaced"


async def test_suspend_then_start_resumes_the_machine(http: httpx.AsyncClient, machines: str) -> None:
    """started → suspended → started; suspending anything but a started machine is refused."""
    machine = await create(http, machines)
    path = f"{machines}/{machine['id']}"
    assert (await http.post(f"{path}/suspend")).status_code == 412
    await wait(http, machines, machine["id"], "started")
    assert (await http.post(f"{path}/suspend")).status_code == 200
    assert (await wait(http, machines, machine["id"], "suspended")).json()["state"] == "suspended"
    assert (await http.post(f"{path}/start")).json()["previous_state"] == "suspended"
    assert (await wait(http, machines, machine["id"], "started")).status_code == 200


async def test_stopping_an_auto_destroy_machine_destroys_it(http: httpx.AsyncClient, machines: str) -> None:
    """``auto_destroy`` machines go on from stopped to destroyed."""
    machine = await create(http, machines, config={**CONFIG, "auto_destroy": True})
    await wait(http, machines, machine["id"], "started")
    await http.post(f"{machines}/{machine['id']}/stop")
    assert (await wait(http, machines, machine["id"], "destroyed")).json()["state"] == "destroyed"


async def test_leases_are_201_envelopes_and_conflicts_are_409(http: httpx.AsyncClient, machines: str) -> None:
    """Acquire answers ``{status, data}``; a second acquire and an un-nonced mutation get 409."""
    machine = await create(http, machines)
    path = f"{machines}/{machine['id']}"
    lease = await http.post(f"{path}/lease", json={"ttl": 60, "description": "deploy"})
    assert lease.status_code == 201
    nonce = lease.json()["data"]["nonce"]
    assert lease.json()["status"] == "success"
    held = await http.post(f"{path}/lease", json={"ttl": 60})
    assert held.status_code == 409
    assert "lease currently held by" in held.json()["error"]
    assert (await http.post(f"{path}/stop")).status_code == 409
    assert (await http.post(f"{path}/stop", headers={"fly-machine-lease-nonce": nonce})).status_code == 200
    assert (await http.get(f"{path}/lease")).json()["data"]["nonce"] == nonce
    assert (await http.delete(f"{path}/lease", headers={"fly-machine-lease-nonce": nonce})).status_code == 200
    assert (await http.get(f"{path}/lease")).status_code == 404


async def test_a_lease_ttl_may_come_in_the_query_as_flygo_sends_it(
    emulator: FlyEmulator, lenient_http: httpx.AsyncClient, machines: str
) -> None:
    """fly-go posts no body and ``?ttl=`` (the spec wants a body); the lease lasts that long."""
    machine = await create(lenient_http, machines)
    lease = await lenient_http.post(f"{machines}/{machine['id']}/lease", params={"ttl": "120"})
    assert lease.status_code == 201
    expires = lease.json()["data"]["expires_at"]
    assert expires == int(emulator.clock.now().timestamp()) + 120


async def test_a_lease_is_acquired_on_create_with_lease_ttl(http: httpx.AsyncClient, machines: str) -> None:
    """``lease_ttl`` returns the nonce with the new machine."""
    machine = await create(http, machines, lease_ttl=30)
    assert machine["nonce"]
    held = await http.post(f"{machines}/{machine['id']}/lease", json={"ttl": 30})
    assert held.status_code == 409


async def test_metadata_keys_are_read_written_and_patched(http: httpx.AsyncClient, machines: str) -> None:
    """Upsert and delete answer 204; PATCH merges and deletes empty values; a stale version is 412."""
    machine = await create(http, machines)
    path = f"{machines}/{machine['id']}/metadata"
    assert (await http.post(f"{path}/role", json={"value": "preview"})).status_code == 204
    assert (await http.get(f"{path}/role")).json() == {"value": "preview"}
    patch = {"metadata": {"role": "", "tier": "free"}, "machine_version": machine["version"]}
    assert (await http.patch(path, json=patch)).status_code == 204
    assert (await http.get(path)).json() == {**CONFIG["metadata"], "tier": "free"}
    assert (await http.patch(path, json={"metadata": {}, "machine_version": "0" * 26})).status_code == 412
    assert (await http.delete(f"{path}/tier")).status_code == 204
    assert (await http.get(f"{path}/tier")).status_code == 404


async def test_a_machine_whose_process_exits_stops_unless_its_policy_restarts_it(
    emulator: FlyEmulator, http: httpx.AsyncClient, machines: str
) -> None:
    """Restart policy ``no``: stopped with an exit event; ``always``: started again on a new backing machine."""
    from velocity.providers.simulated import SimulatedProvider

    provider = emulator.provider
    assert isinstance(provider, SimulatedProvider)
    for policy, final in (("no", "stopped"), ("always", "started")):
        machine = await create(http, machines, config={**CONFIG, "restart": {"policy": policy}})
        await wait(http, machines, machine["id"], "started")
        before = (await http.get(f"{machines}/{machine['id']}")).json()["events"][0]["id"]
        backing = emulator.fleet.machines[machine["id"]].backing_id
        assert backing is not None
        await provider.exit(backing, reason="exit code 137")
        params = {"state": final, "from_event_id": before, "timeout": "5"}
        answer = await http.get(f"{machines}/{machine['id']}/wait", params=params)
        assert answer.json()["state"] == final
        events = (await http.get(f"{machines}/{machine['id']}")).json()["events"]
        assert any(e["type"] == "exit" for e in events)
