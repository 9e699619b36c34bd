"""An emulator of the Fly.io Machines API, for offline tests and for "Fly mode" on a laptop.

``app.FlyEmulator`` is an ASGI app answering the subset of the API the orchestrator uses, faithful to
the spec shipped beside it (``fly-machines-openapi.yaml``; ``spec_check`` validates every answer against
it in tests). Its machines are backed by any ``MachineProvider`` (``fleet``): the simulated one for load
tests, local sandboxes to run real previews. ``faults`` injects what Fly does on a bad day: 429s with
``Retry-After``, 5xx, slow answers, full regions, boots that fail, creates whose answer is lost.
"""

from velocity.emulator.app import EmulatorStats, FlyEmulator
from velocity.emulator.faults import Faults
from velocity.emulator.fleet import HealthProbe

__all__ = ["EmulatorStats", "Faults", "FlyEmulator", "HealthProbe"]
