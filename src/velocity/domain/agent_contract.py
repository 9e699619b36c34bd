"""What the orchestrator and every machine's agent agree on beyond HTTP itself."""

from __future__ import annotations

# Proof that a request to an agent comes from the orchestrator (or from Fly's proxy replaying one of
# its answers): a per-preview secret the orchestrator derives and gives the machine at create. The
# agent refuses every request without it but ``GET /health`` (Fly's own checks), and removes it
# before anything reaches the dev server.
ORIGIN_HEADER = "x-velocity-origin"
