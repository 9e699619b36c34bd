"""What to tell a user whose project ran out of memory."""

from __future__ import annotations


def more_memory(memory_mb: int | None) -> str:
    """What to set after an out-of-memory kill at a limit of ``memory_mb`` (None: not known)."""
    if memory_mb is None or memory_mb <= 0:
        return "set CONTAINER_MEMORY_MB higher"
    return f"the machine has {memory_mb} MB: set CONTAINER_MEMORY_MB to {memory_mb * 2} or more"
