"""The spec checker itself: it must catch an emulator that drifts, or the other suites prove nothing."""

from __future__ import annotations

import httpx
import pytest

from velocity.emulator.spec_check import SpecCheckingTransport, SpecViolation, load_spec_document

MACHINES = "https://fly.test/v1/apps/app/machines"
AUTH = {"authorization": "Bearer t"}


def answering(status: int, body: object = None, content: bytes | None = None) -> SpecCheckingTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        if content is not None:
            return httpx.Response(status, content=content)
        return httpx.Response(status, json=body)

    return SpecCheckingTransport(httpx.MockTransport(handler))


@pytest.mark.parametrize(
    ("method", "url", "status", "body"),
    [
        ("POST", MACHINES, 200, {"id": 5}),  # a machine id must be a string
        ("POST", MACHINES, 201, {"id": "m"}),  # create answers 200, never 201
        ("GET", MACHINES + "/m", 404, {"error": 5}),  # errors are ErrorResponse
        ("GET", MACHINES + "/m/wait", 200, {"ok": "yes"}),
        ("GET", MACHINES + "/m", 503, {"error": "x", "status": "overloaded"}),  # status is an enum
        ("GET", "https://fly.test/v1/nowhere", 200, {}),  # no such operation
    ],
)
async def test_answers_that_break_the_spec_are_caught(
    method: str, url: str, status: int, body: object
) -> None:
    """Wrong types, undeclared success codes, malformed errors and unknown paths all fail."""
    async with httpx.AsyncClient(transport=answering(status, body)) as http:
        with pytest.raises(SpecViolation):
            await http.request(
                method, url, headers=AUTH, json={"config": {"image": "i"}} if method == "POST" else None
            )


async def test_requests_that_break_the_spec_are_caught() -> None:
    """A client sending what the spec forbids (a short signal name, no token) fails too."""
    async with httpx.AsyncClient(transport=answering(200, {"ok": True})) as http:
        with pytest.raises(SpecViolation):
            await http.post(MACHINES + "/m/stop", headers=AUTH, json={"signal": "TERM"})
        with pytest.raises(SpecViolation):
            await http.get(MACHINES)


async def test_well_formed_exchanges_pass_and_are_counted() -> None:
    """An answer as the spec has it passes; ``content: {}`` operations take any body."""
    transport = answering(
        200, [{"id": "m", "state": "started", "config": {"services": [{"autostop": False}]}}]
    )
    async with httpx.AsyncClient(transport=transport) as http:
        await http.get(MACHINES, headers=AUTH)
    assert transport.checked == 1
    async with httpx.AsyncClient(transport=answering(200, content=b"")) as http:
        await http.post(MACHINES + "/m/start", headers=AUTH)


def test_the_spec_is_read_as_yaml_1_2() -> None:
    """``no`` and ``off`` stay strings (a YAML 1.1 parser turns them into False)."""
    schemas = load_spec_document()["components"]["schemas"]
    assert "no" in schemas["fly.MachineRestart"]["properties"]["policy"]["enum"]
    assert "off" in schemas["fly.MachineService"]["properties"]["autostop"]["enum"]
