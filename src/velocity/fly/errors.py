"""Fly's answers and httpx's failures, turned into the project's error tree in one place.

    status                               error
    400                                  ProviderRejected
    401                                  ProviderDenied (the token is missing, expired or not for this API)
    403                                  ProviderDenied (the token may not act on this app)
    404                                  ProviderNotFound
    408, 5xx                             MaybeApplied (transient; Fly may have acted before failing)
    409, 412                             ProviderConflict (a lease, a version), CapacityError for a full host
    422 name_taken / other               ProviderConflict / ProviderRejected

Each is the provider's problem, never the caller's: the API shows them as 502 or 503 with Fly's
message, so a bad ``FLY_API_TOKEN`` never reads as the caller's 401.
    429                                  RateLimited(delay=Retry-After or 1 s)
    body status insufficient_capacity    CapacityError, whatever the status code
    transport: connect failed            Unavailable (nothing was sent)
    transport: timeout, broken answer    MaybeApplied

Messages carry the action, the status, Fly's error text (truncated) and what to do next; every error
keeps Fly's ``fly-request-id`` for support tickets.
"""

from __future__ import annotations

import email.utils
import json
from datetime import UTC, datetime

import httpx

from velocity.domain import (
    CapacityError,
    PreviewError,
    ProviderConflict,
    ProviderDenied,
    ProviderError,
    ProviderNotFound,
    ProviderRejected,
    RateLimited,
    Unavailable,
)

MAX_BODY_CHARS = 300
# A server asking for longer than this is wrong or hostile; the caller's deadline decides beyond it.
MAX_RETRY_AFTER = 60.0

# flyd's words for a host that cannot fit the machine; they arrive in 409 bodies (fly-go matches them).
_HOST_CAPACITY_PHRASES = (
    "insufficient CPUs available",
    "insufficient memory available",
    "insufficient IPs available",
    "insufficient resources available",
)
_CAPACITY_STATUSES = ("insufficient_capacity", "volume_placement_capacity")

TOKEN_HINT = "set FLY_API_TOKEN to a token that can manage the app's machines; see docs/fly.md#tokens"


class MaybeApplied(Unavailable):
    """Transient, and Fly may have acted on the request first: only an idempotent call may be resent."""

    code = "maybe_applied"


def error_from_response(response: httpx.Response, *, action: str) -> PreviewError:
    """The error for a non-2xx answer from the Machines API."""
    status = response.status_code
    request_id = response.headers.get("fly-request-id")
    text, fly_status = _error_text(response)
    detail = f"Fly API {action} answered {status}: {text}" if text else f"Fly API {action} answered {status}"
    if request_id:
        detail += f" (fly-request-id {request_id})"

    if fly_status in _CAPACITY_STATUSES or (
        status == 409 and any(phrase in text for phrase in _HOST_CAPACITY_PHRASES)
    ):
        return CapacityError(f"{detail}; try another region (FLY_REGIONS)", request_id=request_id)
    if status == 400:
        return ProviderRejected(detail, request_id=request_id)
    if status in (401, 403):
        return ProviderDenied(f"{detail}; {TOKEN_HINT}", request_id=request_id)
    if status == 404:
        return ProviderNotFound(detail, request_id=request_id)
    if status == 429:
        delay = retry_after_seconds(response) or 1.0
        return RateLimited(f"{detail}; Fly asks to wait {delay:g}s", delay=delay, request_id=request_id)
    if status == 408 or status >= 500:
        return MaybeApplied(detail, delay=retry_after_seconds(response) or 0.0, request_id=request_id)
    if status in (409, 412) or fly_status == "name_taken":
        return ProviderConflict(detail, request_id=request_id)
    if 400 <= status < 500:
        return ProviderRejected(detail, request_id=request_id)
    return ProviderError(detail, request_id=request_id)


def error_from_transport(exc: httpx.HTTPError, *, action: str) -> ProviderError:
    """The error for a call that got no usable answer."""
    kind = type(exc).__name__
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        # The request never left: resending cannot duplicate anything.
        return Unavailable(f"Fly API {action}: could not connect ({kind}: {_truncate(str(exc))})", delay=0.0)
    return MaybeApplied(f"Fly API {action}: no answer ({kind}: {_truncate(str(exc))})", delay=0.0)


def retry_after_seconds(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), capped; ``None`` when absent or bad."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _error_text(response: httpx.Response) -> tuple[str, str | None]:
    """Fly's ``{"error", "status"}`` body (``message`` preferred, as fly-go does), else the raw text."""
    raw = response.text
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    if isinstance(body, dict):
        message = body.get("message") or body.get("error")
        status = body.get("status")
        text = message if isinstance(message, str) else raw
        return _truncate(text), status if isinstance(status, str) else None
    return _truncate(raw), None


def _truncate(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_BODY_CHARS else text[: MAX_BODY_CHARS - 1] + "…"
