"""Preview URLs: ``{preview_id}.{PREVIEW_DOMAIN}`` streamed to the preview's agent.

Locally a streaming reverse proxy (HTTP and WebSocket) to the agent's unix socket; every request
and frame counts as activity. Other hosts go to the orchestrator's API.
"""

from velocity.router.app import PreviewRouter, preview_id_from_host

__all__ = ["PreviewRouter", "preview_id_from_host"]
