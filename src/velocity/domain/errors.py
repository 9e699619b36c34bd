"""One error tree for the whole project.

    PreviewError
    ├── BadRequest           input that crosses a trust boundary is malformed (HTTP 400/422)
    ├── Unauthorized         no credentials, or credentials that do not verify (401)
    ├── Forbidden            authenticated, but not allowed (403)
    ├── NotFound             no such preview, project or machine (404)
    │   └── PreviewGone      the preview stopped or failed (410)
    ├── Conflict             the request contradicts current state (409)
    ├── QuotaExceeded        a per-user limit is reached (429)
    │   └── TooManyRequests  a per-user rate is exceeded; retry after ``retry_after`` (429)
    ├── ConfigError          a setting is missing or wrong; stops the start
    ├── AgentError           the in-machine agent answered badly or not at all
    ├── DatabaseUnavailable  transient: the database cannot be reached or is busy (503)
    └── ProviderError        a machine backend failed (502, with the backend's own message)
        ├── ProviderRejected    the backend refused the orchestrator's request as invalid
        ├── ProviderDenied      the backend refused the orchestrator's credentials (FLY_API_TOKEN)
        ├── ProviderNotFound    the backend has no such machine or app (also a NotFound)
        ├── ProviderConflict    a lease or name of the backend's is in the way (also a Conflict)
        ├── RateLimited      transient: retry after ``delay`` seconds
        ├── Unavailable      transient: backend down or timed out
        │   └── Resuming     a suspended preview is waking up; a browser sees a progress page
        ├── CapacityError    no room in a region; try another region
        └── SandboxUnavailable  the local sandbox cannot be made on this host

Whether to retry is part of the type: ``retry_after`` is ``None`` for permanent errors. What a
backend answers the orchestrator is never shown as the caller's own fault: a Fly 401 is a
``ProviderDenied`` (502, the operator's token), not the caller's ``Unauthorized``.
"""

from __future__ import annotations


class PreviewError(Exception):
    """Root of every error this project raises on purpose."""

    status_code: int = 500
    code: str = "internal_error"
    retry_after: float | None = None

    def __init__(self, message: str, *, request_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id


class BadRequest(PreviewError):
    status_code = 422
    code = "bad_request"


class Unauthorized(PreviewError):
    status_code = 401
    code = "unauthorized"


class Forbidden(PreviewError):
    status_code = 403
    code = "forbidden"


class NotFound(PreviewError):
    status_code = 404
    code = "not_found"


class PreviewGone(NotFound):
    """The preview existed but has stopped or failed; its URL will not answer again."""

    status_code = 410
    code = "gone"


class Conflict(PreviewError):
    status_code = 409
    code = "conflict"


class QuotaExceeded(PreviewError):
    status_code = 429
    code = "quota_exceeded"

    def __init__(self, message: str, *, limit: int, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.limit = limit
        self.retry_after = retry_after


class TooManyRequests(QuotaExceeded):
    code = "rate_limited"


class ConfigError(PreviewError):
    code = "config_error"


class AgentError(PreviewError):
    status_code = 502
    code = "agent_error"


class ProviderError(PreviewError):
    status_code = 502
    code = "provider_error"


class ProviderRejected(ProviderError):
    code = "provider_rejected"


class ProviderDenied(ProviderError):
    code = "provider_denied"


class ProviderNotFound(ProviderError, NotFound):
    """Caught as ``NotFound`` where a machine that is gone is an answer; a 502 where it reaches a caller."""

    status_code = 502
    code = "provider_not_found"


class ProviderConflict(ProviderError, Conflict):
    status_code = 502
    code = "provider_conflict"


class DatabaseUnavailable(PreviewError):
    status_code = 503
    code = "database_unavailable"

    def __init__(self, message: str, *, delay: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = delay


class RateLimited(ProviderError):
    status_code = 503
    code = "rate_limited"

    def __init__(self, message: str, *, delay: float = 1.0, request_id: str | None = None) -> None:
        super().__init__(message, request_id=request_id)
        self.retry_after = delay


class Unavailable(ProviderError):
    status_code = 503
    code = "unavailable"

    def __init__(self, message: str, *, delay: float = 1.0, request_id: str | None = None) -> None:
        super().__init__(message, request_id=request_id)
        self.retry_after = delay


class Resuming(Unavailable):
    code = "resuming"


class CapacityError(ProviderError):
    status_code = 503
    code = "insufficient_capacity"


class SandboxUnavailable(ProviderError):
    code = "sandbox_unavailable"
