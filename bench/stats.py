"""Small statistics shared by the benchmarks."""

from __future__ import annotations

import statistics


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return {
        "median": round(statistics.median(ordered), 4),
        "p90": round(p90, 4),
        "min": round(ordered[0], 4),
        "max": round(ordered[-1], 4),
        "runs": len(ordered),
    }
