"""The command line for people: ``up`` (the demo), ``serve``, ``projects``, ``previews``, ``token``,
plus the Fly commands (``smoke-test``, ``doctor``, ``machines``, ``fly-emulator``)."""
