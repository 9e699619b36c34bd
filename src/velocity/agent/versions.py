"""The agent's version and the protocol versions the orchestrator gates behaviour on.

``/health`` reports ``agent_version`` and ``protocol``. The orchestrator compares ``protocol`` with the
named constants below, never with a literal: each one is the first protocol version offering a feature.
Bump ``PROTOCOL`` when an endpoint, a field or an exit code changes, and name the new feature here.
"""

from typing import Final

from velocity import __version__

AGENT_VERSION: Final = __version__

PROTOCOL: Final = 1

# /health with agent_version, protocol, state, detail, dev_server and timings; 503 once failed.
HEALTH: Final = 1
# /health?wait=<state>&timeout=<seconds> answers as soon as the state is reached (or failed).
HEALTH_LONG_POLL: Final = 1
# /__velocity/logs?tail=N: the last lines of install and dev server output.
LOGS: Final = 1
# The exit codes of velocity.agent.exits.
EXIT_CODES: Final = 1
