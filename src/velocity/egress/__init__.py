"""The egress proxy: the only way out of a preview machine, and the policy it enforces.

Previews run code that strangers wrote, so their network is closed except for this proxy. It lets a
preview reach the hosts on ``PREVIEW_EGRESS_ALLOWLIST`` (``CONNECT`` for HTTPS, absolute-URI requests
for plain HTTP), resolves names itself and never dials an internal address the allowlist does not name,
and maps the proxy-only name of the orchestrator to the few paths a preview needs (its own snapshot,
Realtime). It imports nothing else of ours, so the orchestrator runs it for local sandboxes and an agent
can run it inside a machine. See docs/security.md.
"""

from velocity.egress.policy import (
    Caller,
    EgressPolicy,
    Entry,
    InternalService,
    PathRule,
    Refused,
    parse_allowlist,
)
from velocity.egress.proxy import EgressProxy, Limits, Resolver, system_resolver
from velocity.egress.wire import CALLER_HEADER

__all__ = [
    "CALLER_HEADER",
    "Caller",
    "EgressPolicy",
    "EgressProxy",
    "Entry",
    "InternalService",
    "Limits",
    "PathRule",
    "Refused",
    "Resolver",
    "parse_allowlist",
    "system_resolver",
]
