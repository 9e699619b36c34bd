"""The vocabulary every other part speaks: previews, machines, their states, and the error tree.

Nothing here does I/O or imports another part of the package.
"""

from velocity.domain.errors import (
    AgentError,
    BadRequest,
    CapacityError,
    ConfigError,
    Conflict,
    Forbidden,
    NotFound,
    PreviewError,
    PreviewGone,
    ProviderError,
    QuotaExceeded,
    RateLimited,
    SandboxUnavailable,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)
from velocity.domain.models import (
    LIVE_STATES,
    TERMINAL_STATES,
    Machine,
    MachineSpec,
    MachineState,
    Preview,
    PreviewEvent,
    PreviewState,
    Project,
)

__all__ = [
    "LIVE_STATES",
    "TERMINAL_STATES",
    "AgentError",
    "BadRequest",
    "CapacityError",
    "ConfigError",
    "Conflict",
    "Forbidden",
    "Machine",
    "MachineSpec",
    "MachineState",
    "NotFound",
    "Preview",
    "PreviewError",
    "PreviewEvent",
    "PreviewGone",
    "PreviewState",
    "Project",
    "ProviderError",
    "QuotaExceeded",
    "RateLimited",
    "SandboxUnavailable",
    "TooManyRequests",
    "Unauthorized",
    "Unavailable",
]
