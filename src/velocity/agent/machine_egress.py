"""The machine's own egress proxy, where no orchestrator's is at hand (a Fly machine).

The same ``velocity.egress`` proxy the orchestrator runs for local sandboxes, here inside the machine
on 127.0.0.1:3128, deciding by ``PREVIEW_EGRESS_ALLOWLIST`` (unset: the npm registry and
SUPABASE_URL's host). The image's entrypoint starts the agent with ``AGENT_EGRESS=machine`` after its
firewall lets only the agent's uid out (``preview-container/firewall.nft``), so the project's code
goes out through this proxy or not at all, and the proxy refuses every internal address (Fly's private
network among them) whatever name leads there. It runs in a thread with an event loop of its own,
started before the snapshot fetch and the install, as the bridge is.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from urllib.parse import urlsplit

from velocity.agent.egress_bridge import DEFAULT_LISTEN
from velocity.agent.logs import LogBuffer
from velocity.domain.errors import ConfigError
from velocity.egress.policy import (
    NPM_REGISTRY,
    SETTING,
    Caller,
    EgressPolicy,
    parse_allowlist,
    registry_hosts,
)
from velocity.egress.proxy import EgressProxy


def allowlist(env: Mapping[str, str]) -> tuple[str, ...]:
    """The machine's allowlist: the setting as the orchestrator passed it, or the default."""
    listed = env.get(SETTING, "").strip()
    if listed:
        return tuple(part.strip() for part in listed.split(",") if part.strip())
    entries = list(registry_hosts(NPM_REGISTRY))
    supabase = urlsplit(env.get("SUPABASE_URL", "")).hostname
    if supabase and not supabase.endswith(".internal"):
        entries.append(supabase)
    return tuple(entries)


def start_machine_proxy(env: Mapping[str, str], logs: LogBuffer) -> int | None:
    """Serve the proxy in a daemon thread when the machine asks for it; the port it listens on."""
    if env.get("AGENT_EGRESS", "").strip() != "machine":
        return None
    entries = allowlist(env)
    try:
        policy = EgressPolicy(parse_allowlist(entries))
    except ValueError as exc:
        raise ConfigError(f"{SETTING}: {exc}") from exc
    caller = Caller(machine_id=env.get("FLY_MACHINE_ID", "machine"), project_id=env.get("PROJECT_ID", ""))
    listening = threading.Event()
    bound: list[int] = []

    async def serve() -> None:
        proxy = EgressProxy(policy)
        try:
            bound.append(await proxy.listen_tcp(*DEFAULT_LISTEN, caller))
        finally:
            listening.set()
        await asyncio.Event().wait()  # until the process ends

    threading.Thread(target=asyncio.run, args=(serve(),), name="machine-egress", daemon=True).start()
    listening.wait(10)
    if not bound:
        logs.agent(f"egress proxy: cannot listen on {DEFAULT_LISTEN[0]}:{DEFAULT_LISTEN[1]}")
        return None
    logs.agent(f"egress proxy on {DEFAULT_LISTEN[0]}:{bound[0]}; the project may reach: {', '.join(entries)}")
    return bound[0]
