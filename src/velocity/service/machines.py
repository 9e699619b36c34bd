"""The machine every preview (and every pooled machine) asks a provider for, from the settings."""

from __future__ import annotations

from collections.abc import Mapping

from velocity.domain import MachineSpec
from velocity.settings import Settings


def machine_spec(
    settings: Settings,
    *,
    env: Mapping[str, str],
    metadata: Mapping[str, str],
    region: str | None = None,
    cache_key: str | None = None,
) -> MachineSpec:
    """A machine of the configured size and image; ``env`` (the agent's identity) is added to what
    every machine gets: the port, its memory (for the agent's messages), Realtime and the egress."""
    s = settings
    common = {
        "CONTAINER_INTERNAL_PORT": str(s.container_internal_port),
        # For the agent's own messages: "the machine has 512 MB; set CONTAINER_MEMORY_MB to ..."
        "CONTAINER_MEMORY_MB": str(s.container_memory_mb),
        "SUPABASE_URL": s.supabase_url or s.orchestrator_url,
        "SUPABASE_ANON_KEY": s.supabase_anon_key.get_secret_value() if s.supabase_anon_key else "",
    }
    if s.preview_egress_allowlist is not None:
        # A machine with a proxy of its own (a Fly machine's, ``agent.machine_egress``) decides by it.
        common["PREVIEW_EGRESS_ALLOWLIST"] = ",".join(s.preview_egress_allowlist)
    return MachineSpec(
        cache_key=cache_key,
        image=s.preview_container_image,
        memory_mb=s.container_memory_mb,
        disk_mb=s.container_disk_mb,
        cpus=s.container_cpu_count,
        cpu_kind=s.container_cpu_kind,
        internal_port=s.container_internal_port,
        env={**env, **common},
        metadata=dict(metadata),
        region=region if region is not None else (s.fly_regions[0] if s.fly_regions else None),
    )
