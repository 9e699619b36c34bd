"""Local machines: each a bubblewrap sandbox in its own cgroups, reached through a unix socket.

The embedded default, so one command runs previews on a laptop with no account anywhere.
"""

from velocity.providers.local.provider import LocalSandboxProvider, SandboxOptions

__all__ = ["LocalSandboxProvider", "SandboxOptions"]
