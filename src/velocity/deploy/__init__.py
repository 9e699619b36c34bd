"""The deployment kit's code: the ``fly.toml`` machine template of preview machines.

``load_machine_template`` reads ``preview-container/fly.toml`` into a frozen ``MachineTemplate``;
``apply_settings`` lays the operator's settings over it (settings win where set), and
``disagreements`` lists where the two differ, for ``velocity doctor``. The files this reads are
checked against each other by ``tests/deploy``.
"""

from velocity.deploy.overrides import Disagreement, Winner, apply_settings, disagreements
from velocity.deploy.template import (
    FORBIDDEN_ENV,
    AutoStop,
    CheckTemplate,
    ConcurrencyTemplate,
    GuestTemplate,
    MachineTemplate,
    PortTemplate,
    RestartTemplate,
    ServiceTemplate,
    load_machine_template,
    parse_machine_template,
)

# Where the preview machines' template lives, relative to the repository root and to the
# orchestrator image's working directory (the root Dockerfile copies it there).
PREVIEW_TEMPLATE_PATH = "preview-container/fly.toml"

__all__ = [
    "FORBIDDEN_ENV",
    "PREVIEW_TEMPLATE_PATH",
    "AutoStop",
    "CheckTemplate",
    "ConcurrencyTemplate",
    "Disagreement",
    "GuestTemplate",
    "MachineTemplate",
    "PortTemplate",
    "RestartTemplate",
    "ServiceTemplate",
    "Winner",
    "apply_settings",
    "disagreements",
    "load_machine_template",
    "parse_machine_template",
]
