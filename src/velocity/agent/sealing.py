"""The agent's word to the host on each install it finishes: the seal of ``node_modules``.

Written to the descriptor named by ``AGENT_SEAL_FD`` (a host file the provider opened), before the dev
server or anything else of the project runs after the install. The descriptor is the agent's alone:
no child inherits it, and the agent is not dumpable, so user code cannot reach it through ``/proc``.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from velocity.domain.install_seal import seal


class SealReport:
    def __init__(self, fd: int | None) -> None:
        self._fd = fd
        if fd is not None:
            os.set_inheritable(fd, False)

    async def write(self, workspace: Path) -> None:
        """Seal ``workspace/node_modules`` and report it (nothing, with nowhere to report)."""
        if self._fd is None:
            return
        digest = await asyncio.to_thread(seal, workspace / "node_modules")
        data = (digest or "").encode()
        os.pwrite(self._fd, data, 0)
        os.ftruncate(self._fd, len(data))
