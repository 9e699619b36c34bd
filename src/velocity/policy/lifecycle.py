"""When a preview has to end, and which machines nobody needs."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from velocity.domain import Machine, MachineState, Preview, PreviewState


@dataclass(frozen=True, slots=True)
class Limits:
    lifetime: timedelta  # MAX_CONTAINER_LIFETIME_MINUTES
    idle: timedelta  # PREVIEW_IDLE_TIMEOUT_MINUTES
    readiness: timedelta  # CONTAINER_TIMEOUT_SECONDS
    max_per_user: int  # MAX_CONTAINERS_PER_USER
    # A replica not heard from for this long has stopped (CONTAINER_CLEANUP_INTERVAL_MINUTES: it beats
    # three times an interval), and its previews' work passes to the leader.
    replica_timeout: timedelta = timedelta(minutes=5)
    # A machine in a transient state this long is stuck (STUCK_MACHINE_MINUTES; the seed guide's hour).
    stuck_after: timedelta = timedelta(hours=1)
    # What idleness does (PREVIEW_IDLE_ACTION): suspend the machine until the next request, or stop.
    idle_action: str = "suspend"


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with a live preview: stop it (it ran its course), suspend it (nobody looks at it)
    or fail it (it never worked)."""

    action: str  # "stop" | "suspend" | "fail"
    reason: str


def verdict(preview: Preview, now: datetime, limits: Limits) -> Verdict | None:
    """``None`` while the preview may live on; otherwise why it must end."""
    if not preview.is_live or preview.state == PreviewState.STOPPING:
        return None
    if now >= preview.expires_at:
        lifetime = int(limits.lifetime.total_seconds() // 60)
        return Verdict("stop", f"reached its maximum lifetime of {lifetime} min")
    if preview.state in (PreviewState.PROVISIONING, PreviewState.BOOTING):
        if now - preview.created_at >= limits.readiness:
            seconds = int(limits.readiness.total_seconds())
            return Verdict("fail", f"not serving within {seconds} s (CONTAINER_TIMEOUT_SECONDS)")
        return None
    if preview.state == PreviewState.SUSPENDED:
        return None  # costs no CPU; the next request resumes it, its lifetime still ends it
    if now - preview.last_activity_at >= limits.idle:
        minutes = limits.idle.total_seconds() / 60
        return Verdict(limits.idle_action, f"idle for {minutes:g} min (PREVIEW_IDLE_TIMEOUT_MINUTES)")
    return None


def machines_to_destroy(
    machines: Iterable[Machine], live: Iterable[Preview], *, pooled: Collection[str] = ()
) -> list[Machine]:
    """Machines of ours that no live preview owns and the warm pool does not hold (``pooled``: its
    entries' keys): each is money burning."""
    live = list(live)
    owned = {p.machine_id for p in live if p.machine_id}
    # A machine whose preview is live but has no machine recorded yet is being created right now. One
    # whose preview has another machine is left from an earlier attempt (a create whose answer was
    # lost, a launch killed before it wrote the id): an orphan like any other.
    being_created = {p.id for p in live if not p.machine_id}
    return [
        m
        for m in machines
        if not m.state.is_gone
        and m.id not in owned
        and m.metadata.get("velocity_preview_id") not in being_created
        and m.metadata.get("velocity_pool") not in pooled
    ]


# States a machine passes through on its way somewhere; staying in one is being stuck.
TRANSIENT_STATES = frozenset(
    {
        MachineState.CREATED,
        MachineState.STARTING,
        MachineState.STOPPING,
        MachineState.SUSPENDING,
        MachineState.DESTROYING,
    }
)


def stuck_machines(machines: Iterable[Machine], now: datetime, after: timedelta) -> list[tuple[Machine, str]]:
    """Machines in a transient state for ``after`` or longer, each with how long, in words: Fly
    bills them, and no preview is served by one."""
    stuck = []
    for machine in machines:
        spent = now - machine.in_state_since
        if machine.state in TRANSIENT_STATES and spent >= after:
            stuck.append((machine, f"{machine.state} for {int(spent.total_seconds() // 60)} min"))
    return stuck


# Why previews end, as the metrics count them: the first phrase a reason contains names its kind.
END_REASONS = (
    ("deleted", "deleted"),
    ("maximum lifetime", "lifetime"),
    ("idle for", "idle"),
    ("not serving within", "failed_boot"),
    ("agent reported failure", "failed_boot"),
    ("could not create a machine", "create_failed"),
    ("was stuck", "stuck"),
    ("machine", "machine_gone"),
    ("shutting down", "shutdown"),
)


def end_reason(reason: str) -> str:
    """The kind of ``reason`` (a stop's or a failure's words): deleted, lifetime, idle, failed_boot,
    create_failed, machine_gone, shutdown, or other."""
    lowered = reason.lower()
    return next((kind for phrase, kind in END_REASONS if phrase in lowered), "other")
