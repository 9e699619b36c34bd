"""Rewrite the settings table in README.md from the code (``python scripts/readme_settings.py``)."""

from __future__ import annotations

import re
from pathlib import Path

from velocity.settings import settings_table

README = Path(__file__).resolve().parents[1] / "README.md"

text = README.read_text()
table = re.compile(r"^\| variable \| default \| meaning \|\n(?:^\|.*\|\n)+", re.MULTILINE)
if not table.search(text):
    raise SystemExit("README.md has no settings table to replace")
README.write_text(table.sub(settings_table() + "\n", text, count=1))
