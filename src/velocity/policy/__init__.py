"""Pure decisions with an injected clock: may a user create one more preview, and which previews
or machines must go (expired, idle, stuck, orphaned). No I/O here."""

from velocity.policy.lifecycle import (
    TRANSIENT_STATES,
    Limits,
    Verdict,
    end_reason,
    machines_to_destroy,
    stuck_machines,
    verdict,
)
from velocity.policy.rate import TokenBuckets

__all__ = [
    "TRANSIENT_STATES",
    "Limits",
    "TokenBuckets",
    "Verdict",
    "end_reason",
    "machines_to_destroy",
    "stuck_machines",
    "verdict",
]
