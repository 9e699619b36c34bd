"""What the orchestrator and every machine's agent agree on beyond HTTP itself."""

from __future__ import annotations

from collections.abc import Sequence

# Proof that a request to an agent comes from the orchestrator (or from Fly's proxy replaying one of
# its answers): a per-preview secret the orchestrator derives and gives the machine at create. The
# agent refuses every request without it but ``GET /health`` (Fly's own checks), and removes it
# before anything reaches the dev server.
ORIGIN_HEADER = "x-velocity-origin"

# The agent's credentials. A provider that can hand a process a descriptor (the local sandbox) moves
# them out of the environment into a memory file named by ``SECRETS_FD_VARIABLE`` (JSON, name to
# value), which the agent reads and closes at start: then no process of the sandbox, user code
# included, finds them in an environment (``/proc/<pid>/environ`` shows the initial one).
SECRET_VARIABLES = ("AGENT_TOKEN", "AGENT_ORIGIN_SECRET")
SECRETS_FD_VARIABLE = "AGENT_SECRETS_FD"

# Where the agent reports what its install left in node_modules (``install_seal.seal``): a descriptor
# of a host file the provider opens for writing, named by this variable. The provider keeps a
# machine's node_modules for the owner's next preview only if the tree it finds at the end still
# matches the agent's last seal.
SEAL_FD_VARIABLE = "AGENT_SEAL_FD"

# Where a machine has two identities, the agent is one uid and the project's code (installs, the dev
# server) another, named to the agent by ``USER_VARIABLE`` ("uid:gid"). The machine starts the agent
# with ``as_agent``: its own uid in the project's group, holding only the capabilities that start
# and signal processes of the project's uid, ambient so they survive the exec and bounded so nothing
# gives more back. Both the preview image's entrypoint and the local sandbox start it so.
USER_VARIABLE = "AGENT_USER"
AGENT_CAPABILITIES = ("setuid", "setgid", "kill")


def as_agent(uid: int, gid: int, argv: Sequence[str]) -> list[str]:
    """``argv`` run as the agent's ``uid`` in group ``gid``; the caller holds ``CAP_SETUID``,
    ``CAP_SETGID`` and ``CAP_SETPCAP`` (to bound the set)."""
    keep = ",".join(f"+{cap}" for cap in AGENT_CAPABILITIES)
    return [
        "setpriv",
        f"--reuid={uid}",
        f"--regid={gid}",
        "--clear-groups",
        f"--inh-caps=-all,{keep}",
        f"--ambient-caps=-all,{keep}",
        f"--bounding-set=-all,{keep}",
        "--",
        *argv,
    ]
