"""Hostile input: the in-process orchestrator of the API tests, and the end-to-end fixtures."""

from tests.api.conftest import Orchestrator, orchestrator
from tests.e2e.conftest import npm_cache

__all__ = ["Orchestrator", "npm_cache", "orchestrator"]
