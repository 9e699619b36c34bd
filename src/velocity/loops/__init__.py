"""Background loops: the reaper and the reconciler, run every CONTAINER_CLEANUP_INTERVAL_MINUTES
(and once at start) under one supervisor that cancels the rest when one dies."""

from velocity.loops.maintenance import maintenance_pass, run_maintenance
from velocity.loops.supervisor import supervise

__all__ = ["maintenance_pass", "run_maintenance", "supervise"]
