"""The HTTP API (FastAPI; OpenAPI at ``/openapi.json``): previews, projects, health.

Routes translate requests into service calls; one exception handler maps the error tree to
status codes and a JSON body ``{"error": {"code", "message"}}``.
"""

from velocity.api.app import create_api

__all__ = ["create_api"]
