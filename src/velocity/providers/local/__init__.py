"""Local machines: each a bubblewrap sandbox in its own cgroups, reached through a unix socket, with a
network of its own whose only way out is the egress proxy (``network``).

The embedded default, so one command runs previews on a laptop with no account anywhere.
"""

from velocity.providers.local.provider import LocalSandboxProvider, SandboxOptions

__all__ = ["LocalSandboxProvider", "SandboxOptions"]
