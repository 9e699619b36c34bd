"""Machine providers: the only code that starts processes or machines.

``base.MachineProvider`` is the protocol; ``fake`` is in memory (for service and loop tests),
``local`` runs bubblewrap sandboxes on this host, ``fly`` drives Fly.io Machines.
"""
