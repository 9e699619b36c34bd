"""The Grafana dashboard charts what the orchestrator exports: every query names only metrics that
``velocity.metrics`` defines, with the suffixes Prometheus gives each type."""

from __future__ import annotations

import json
import re
from pathlib import Path

from velocity.metrics import REGISTRY

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "velocity.json"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported() -> set[str]:
    names = set()
    for family in REGISTRY.collect():
        names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
    return names


def queries() -> list[str]:
    document = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in document["panels"] for target in panel["targets"]]


def test_every_query_names_an_exported_metric() -> None:
    known = exported()
    for expr in queries():
        named = set(re.findall(r"\bvelocity_[a-z_]+", expr))
        assert named, f"a query that charts none of ours: {expr}"
        assert named <= known, (expr, sorted(named - known))


def test_every_exported_metric_is_charted() -> None:
    """A metric nobody looks at is one the dashboard forgot."""
    charted = {name for expr in queries() for name in re.findall(r"\bvelocity_[a-z_]+", expr)}
    for family in REGISTRY.collect():
        assert any(family.name + suffix in charted for suffix in SUFFIXES[family.type]), family.name
