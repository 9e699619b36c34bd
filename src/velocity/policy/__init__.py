"""Pure decisions with an injected clock: may a user create one more preview, and which previews
or machines must go (expired, idle, stuck, orphaned). No I/O here."""

from velocity.policy.lifecycle import Limits, Verdict, machines_to_destroy, verdict

__all__ = ["Limits", "Verdict", "machines_to_destroy", "verdict"]
