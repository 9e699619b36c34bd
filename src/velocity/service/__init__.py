"""The use cases: create, get, list, delete and keep alive previews; route to them; import projects.

The service owns the lifecycle of a preview (rows before machines, readiness deadline, failures with
their logs) and talks to the store, a provider and the agents. It never touches HTTP requests.
"""

from velocity.service.agent_client import AgentClient, AgentHealth
from velocity.service.previews import PreviewService
from velocity.service.projects import ProjectService

__all__ = ["AgentClient", "AgentHealth", "PreviewService", "ProjectService"]
