"""Hold the emulator (and our client) to Fly's OpenAPI spec: every exchange is validated with openapi-core.

``SpecCheckingTransport`` wraps any httpx transport; tests put it between the Fly client and the
emulator, so a response that drifts from ``fly-machines-openapi.yaml`` fails the test that caused it.
It needs the dev dependencies (openapi-core, ruamel.yaml).

The spec is read as published, with three readings made explicit:

* ``content: {}`` (a Swagger 2 leftover on start, stop, delete...) means "no content described", so the
  body is not checked, instead of "no body may be sent";
* an error status the operation does not list (404 on get, 408 on wait, 429 anywhere...) must carry the
  spec's ``ErrorResponse``; an undeclared success status is always a violation;
* ``fly.MachineService.autostop`` also takes booleans, as its own description says responses use them.
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from typing import Any

import httpx
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.testing import MockRequest, MockResponse
from ruamel.yaml import YAML
from werkzeug.datastructures import Headers, ImmutableMultiDict

SERVER = "https://api.machines.dev"
SPEC_FILE = "fly-machines-openapi.yaml"
_ERROR = {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}  # fmt: skip
_METHODS = ("get", "post", "put", "patch", "delete")


class SpecViolation(AssertionError):
    """An exchange that Fly's spec does not allow."""


def load_spec_document() -> dict[str, Any]:
    """The spec as a dict, parsed as YAML 1.2 (YAML 1.1 would turn ``no`` and ``off`` into False)."""
    text = resources.files("velocity.emulator").joinpath(SPEC_FILE).read_text(encoding="utf-8")
    document: dict[str, Any] = YAML(typ="safe", pure=True).load(text)
    return document


def _readings(document: dict[str, Any]) -> dict[str, Any]:
    for item in document["paths"].values():
        for method in _METHODS:
            if (operation := item.get(method)) is None:
                continue
            for response in operation.get("responses", {}).values():
                if response.get("content") == {}:
                    del response["content"]
            operation["responses"].setdefault("default", _ERROR)
    autostop = document["components"]["schemas"]["fly.MachineService"]["properties"]["autostop"]
    document["components"]["schemas"]["fly.MachineService"]["properties"]["autostop"] = {
        "oneOf": [{"type": "boolean"}, {k: v for k, v in autostop.items() if k != "description"}]
    }
    return document


@functools.cache
def fly_spec() -> FlySpec:
    return FlySpec(_readings(load_spec_document()))


class FlySpec:
    def __init__(self, document: dict[str, Any]) -> None:
        self.openapi = OpenAPI.from_dict(document)
        self._operations: list[tuple[re.Pattern[str], str, frozenset[str]]] = []
        for path, item in document["paths"].items():
            pattern = re.compile("^" + re.sub(r"\{[^/]+\}", "[^/]+", path) + "$")
            for method in _METHODS:
                if method in item:
                    declared = frozenset(item[method]["responses"]) - {"default"}
                    self._operations.append((pattern, method, declared))

    def declared_statuses(self, method: str, path: str) -> frozenset[str]:
        for pattern, operation_method, declared in self._operations:
            if operation_method == method.lower() and pattern.match(path):
                return declared
        raise SpecViolation(f"{method} {path} is not an operation of the Machines API")

    def check(self, request: httpx.Request, response: httpx.Response, *, check_request: bool = True) -> None:
        """Raise ``SpecViolation`` unless both sides of the exchange are what the spec allows."""
        path = request.url.path
        where = f"{request.method} {request.url.path}?{request.url.query.decode()} → {response.status_code}"
        declared = self.declared_statuses(request.method, path)
        if response.status_code < 400 and str(response.status_code) not in declared:
            raise SpecViolation(f"{where}: the spec lists only {sorted(declared)} for this operation")
        ours = _openapi_request(request)
        try:
            if check_request:
                self.openapi.validate_request(ours)
            self.openapi.validate_response(ours, _openapi_response(response))
        except Exception as exc:  # openapi-core's errors have no common base worth naming here
            details = "; ".join(str(e) for e in _causes(exc))
            raise SpecViolation(f"{where}: {details}\nbody: {response.text[:500]}") from exc


class SpecCheckingTransport(httpx.AsyncBaseTransport):
    """Pass requests to ``inner``; validate every Machines API exchange against the spec on the way back."""

    def __init__(self, inner: httpx.AsyncBaseTransport, *, check_requests: bool = True) -> None:
        self.inner = inner
        self.check_requests = check_requests
        self.spec = fly_spec()
        self.checked = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        await response.aread()
        if not request.url.path.startswith("/_emulator/"):
            self.spec.check(request, response, check_request=self.check_requests)
            self.checked += 1
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def _openapi_request(request: httpx.Request) -> MockRequest:
    body = request.content
    ours = MockRequest(
        SERVER,
        request.method,
        request.url.path,
        headers=dict(request.headers),
        data=body,
        content_type=request.headers.get("content-type", "application/json" if body else ""),
    )
    # Repeated parameters (``state=a&state=b``) survive only in a multi-dict.
    ours.parameters = RequestParameters(
        query=ImmutableMultiDict(list(request.url.params.multi_items())),
        header=Headers(dict(request.headers)),
        cookie=ImmutableMultiDict(),
        path={},
    )
    return ours


def _openapi_response(response: httpx.Response) -> MockResponse:
    content_type = response.headers.get("content-type", "").split(";")[0]
    return MockResponse(
        response.content,
        status_code=response.status_code,
        headers=dict(response.headers),
        content_type=content_type,
    )


def _causes(exc: BaseException) -> list[BaseException]:
    found: list[BaseException] = [exc]
    for nested in getattr(exc, "schema_errors", None) or []:
        found.append(nested)
    if exc.__cause__ is not None:
        found.extend(_causes(exc.__cause__))
    return found
