"""Who the project's code runs as: a uid of its own, apart from the agent's (``AGENT_USER``).

Where the machine gives the agent two identities (the preview image's entrypoint, ``guest``), the
agent runs as one uid with only the capabilities to start and stop processes of another
(``CAP_SETUID``, ``CAP_SETGID``, ``CAP_KILL``), and every install and dev server runs as the other,
through ``setpriv``: no capabilities (inheritable and ambient sets cleared, so none survive the
exec), no supplementary groups, and ``no_new_privs``, so no setuid file or file capability gives any
back. The two share a group, and both write the workspace with umask 002, so each can change what
the other wrote there; nothing else of the agent's is the project's to read or signal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from velocity.domain.agent_contract import USER_VARIABLE
from velocity.domain.errors import ConfigError

SHARED_UMASK = 0o002


@dataclass(frozen=True, slots=True)
class UserCode:
    uid: int
    gid: int

    @classmethod
    def parse(cls, raw: str) -> UserCode:
        uid, _, gid = raw.strip().partition(":")
        if not uid.isdigit() or not (gid or uid).isdigit() or int(uid) == 0:
            raise ConfigError(f"{USER_VARIABLE} must be uid:gid of an unprivileged user, not {raw!r}")
        return cls(int(uid), int(gid or uid))

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` as the project's user, with nothing of the agent's privileges."""
        return [
            "setpriv",
            f"--reuid={self.uid}",
            f"--regid={self.gid}",
            "--clear-groups",
            "--inh-caps=-all",
            "--ambient-caps=-all",
            "--no-new-privs",
            "--",
            *argv,
        ]
