"""A streaming reverse proxy for HTTP and WebSocket, as one ASGI application.

Two parts reuse it: the in-machine agent forwards everything that is not its own endpoint to the dev
server over loopback TCP, and the orchestrator's router forwards a preview's traffic to its agent over
a unix socket. Bodies stream both ways without buffering, hop-by-hop headers are dropped, the
``X-Forwarded-*`` headers are added, and an upstream that cannot be reached becomes a short
``text/plain`` 502 (504 when it does not answer in time) rather than a 500. A resolver callable picks the
upstream per request, so routing stays with the caller; errors from the project's tree raised by the
resolver become their status codes.
"""

from velocity.proxy.app import ReverseProxy
from velocity.proxy.upstream import Upstream

__all__ = ["ReverseProxy", "Upstream"]
