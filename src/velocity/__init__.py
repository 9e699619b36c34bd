"""Velocity Previews: live previews of user code on isolated machines.

The orchestrator (``api``, ``router``, ``service``, ``loops``, ``store``) creates, routes to and
destroys preview machines made by a ``providers`` backend; the ``agent`` runs inside each machine.
``docs/architecture.md`` draws the layers; import-linter holds them.
"""

__version__ = "0.1.0"
