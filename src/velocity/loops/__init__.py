"""Background loops: the replica's heartbeat (and leadership), and the reaper and the reconciler,
run every CONTAINER_CLEANUP_INTERVAL_MINUTES on the leader, under one supervisor that cancels the
rest when one dies."""

from velocity.loops.health import LoopHealth, LoopMonitor
from velocity.loops.maintenance import maintenance_pass, run_maintenance
from velocity.loops.replica import Replica
from velocity.loops.supervisor import supervise

__all__ = ["LoopHealth", "LoopMonitor", "Replica", "maintenance_pass", "run_maintenance", "supervise"]
