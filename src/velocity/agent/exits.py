"""How the agent's exit status tells the orchestrator why a machine stopped, even without its logs."""

import enum


class ExitCode(enum.IntEnum):
    OK = 0  # stopped by SIGTERM or SIGINT
    FAILED = (
        1  # the preview failed: snapshot, install, or a dev server that kept crashing; see /health detail
    )
    CONFIG = 2  # the environment is missing or malformed; nothing was started
    DEV_SERVER_KILLED = 3  # the dev server died of SIGKILL, most likely the memory limit's OOM killer
