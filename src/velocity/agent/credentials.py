"""The agent's credentials kept from the code it runs.

A provider may hand them over through a descriptor instead of the environment
(``SECRETS_FD_VARIABLE``): read once, closed, and kept in this process's memory only (children get
``commands.child_env``, without them). The agent also makes itself non-dumpable, so that processes
of the same user (the dev server, npm's scripts) cannot read its memory, descriptors or environment
through ``/proc``.
"""

from __future__ import annotations

import ctypes
import json
import os
from collections.abc import MutableMapping

from velocity.domain.agent_contract import SECRET_VARIABLES, SECRETS_FD_VARIABLE
from velocity.domain.errors import ConfigError

PR_SET_DUMPABLE = 4


def take_secrets(environ: MutableMapping[str, str]) -> None:
    """Move the credentials behind ``SECRETS_FD_VARIABLE`` into ``environ`` (in memory only)."""
    named = environ.pop(SECRETS_FD_VARIABLE, None)
    if named is None:
        return
    try:
        with os.fdopen(int(named), "rb") as handed:
            secrets = json.loads(handed.read())
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{SECRETS_FD_VARIABLE}={named}: the credentials could not be read ({exc})"
        ) from exc
    if not isinstance(secrets, dict) or not set(secrets) <= set(SECRET_VARIABLES):
        raise ConfigError(f"{SECRETS_FD_VARIABLE} must hold a JSON object of {', '.join(SECRET_VARIABLES)}")
    environ.update({str(name): str(value) for name, value in secrets.items()})


def keep_to_myself() -> bool:
    """No core dumps, no ``/proc/<pid>/mem``, ``environ`` or ``fd`` for other processes of the same
    user (the kernel makes them root's); children start dumpable again. False where prctl fails."""
    try:
        result: int = ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (OSError, AttributeError):
        return False
    return result == 0
