"""Pure decisions with an injected clock: may a user create one more preview, and which previews
or machines must go (expired, idle, stuck, orphaned). No I/O here."""

from velocity.policy.lifecycle import Limits, Verdict, end_reason, machines_to_destroy, verdict
from velocity.policy.rate import TokenBuckets

__all__ = ["Limits", "TokenBuckets", "Verdict", "end_reason", "machines_to_destroy", "verdict"]
