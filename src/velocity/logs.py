"""The orchestrator's log lines: structlog over the standard library's logging.

Every module logs with ``logging.getLogger(__name__)`` as before; each line goes through structlog's
processors, which add the time, the level, the logger and what is bound to the work in hand
(``request_id`` for an HTTP request; ``preview_id``, ``user_id`` and ``machine_id`` for a preview's
work, bound by the service), and render it as one JSON object per line (``LOG_FORMAT=json``, the
default when standard error is not a terminal: Fly's log shipping, files) or as readable
``key=value`` text in a terminal. Bound values are context variables: a task started while they are
bound (a preview's launch, from its create request) carries them on.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

import structlog

CONTEXT_KEYS = ("request_id", "preview_id", "user_id", "machine_id")


def configure(
    *, level: int = logging.INFO, json_lines: bool | None = None, stream: TextIO | None = None
) -> None:
    """Send every logger's lines through structlog to ``stream`` (standard error by default)."""
    out = stream or sys.stderr
    if json_lines is None:
        json_lines = not out.isatty()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    final: list[Any] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if json_lines:
        final += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        final.append(structlog.dev.ConsoleRenderer(colors=False, pad_event_to=0))
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()], processors=final
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def bind(**values: object) -> None:
    """Bind values to the work in hand (and to the tasks it starts from now on); ``None`` skips."""
    structlog.contextvars.bind_contextvars(**{k: v for k, v in values.items() if v is not None})


@contextmanager
def bound(**values: object) -> Iterator[None]:
    """Values bound for a block, then as they were."""
    with structlog.contextvars.bound_contextvars(**{k: v for k, v in values.items() if v is not None}):
        yield
