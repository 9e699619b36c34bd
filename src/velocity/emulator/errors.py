"""Answers the emulator gives when a request fails, in Fly's ``{"error", "status"}`` shape."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from velocity.emulator.wire import InvalidRequest


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        fly_status: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.fly_status = fly_status
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"error": self.message}
        if self.fly_status:
            body["status"] = self.fly_status
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def bad_request(exc: InvalidRequest) -> ApiError:
    return ApiError(400, str(exc))


async def read_json(request: Request, *, go_type: str, required: bool = True) -> Any:
    """The request's JSON; a Go-style 400 when it does not decode, ``None`` when optional and absent."""
    raw = await request.body()
    if not raw.strip():
        if required:
            raise ApiError(400, "EOF")
        return None
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, f"invalid character in request body: {exc}") from exc
    if not isinstance(body, dict):
        kind = "array" if isinstance(body, list) else type(body).__name__
        raise ApiError(400, f"json: cannot unmarshal {kind} into Go value of type {go_type}")
    return body


def query_bool(request: Request, name: str) -> bool:
    value = request.query_params.get(name, "").lower()
    if value in ("", "0", "false", "f"):
        return False
    if value in ("1", "true", "t"):
        return True
    raise ApiError(400, f'strconv.ParseBool: parsing "{value}": invalid syntax ({name})')
