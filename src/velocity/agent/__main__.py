"""``python -m velocity.agent``."""

import time

_started = time.monotonic()  # before the imports below, which are part of the start-up being timed

from velocity.agent.main import main  # noqa: E402

raise SystemExit(main(_started))
