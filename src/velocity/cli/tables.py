"""How the CLI prints what it lists: tables whose ids and URLs are never cut short (they are there
to be copied; the other columns give way in a narrow terminal), and ages in words."""

from __future__ import annotations

from datetime import timedelta

from rich.table import Table


def table(headers: list[str], rows: list[list[str]], *, whole: set[str]) -> Table:
    """A table whose columns named in ``whole`` keep every character of every cell."""
    made = Table()
    for index, header in enumerate(headers):
        if header in whole:
            widest = max([len(header), *(len(row[index]) for row in rows)])
            made.add_column(header, no_wrap=True, overflow="ignore", min_width=widest)
        else:
            made.add_column(header)
    for row in rows:
        made.add_row(*row)
    return made


def age(spent: timedelta) -> str:
    seconds = max(0, int(spent.total_seconds()))
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
