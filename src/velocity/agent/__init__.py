"""The preview agent: the runtime inside every preview machine (Fly Machine or local sandbox).

It fetches the project's snapshot into its workspace, installs dependencies, supervises the dev server
(restarting it after a crash, giving up with a reason after repeated crashes or an out-of-memory kill)
and serves one HTTP endpoint: ``/health`` (long-pollable), ``/__velocity/logs`` and, for everything
else, a streaming reverse proxy to the dev server, websockets included. ``python -m velocity.agent`` is
the entry point; the environment it reads is documented in ``config``, the exit codes in ``exits`` and
the protocol versions the orchestrator gates on in ``versions``; ``context`` is the seam through which
live file sync writes files, restarts the dev server and follows logs and status. Its start is on the critical path of
every preview, so the modules that run before the web stack is imported stay on the standard library.
"""
