"""Medians and percentiles, and taking the median of each number across rounds."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


def median(values: Iterable[float]) -> float:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return float(statistics.median(finite)) if finite else math.nan


def summary(values: Sequence[float]) -> dict[str, float]:
    """p50, p90, p99, mean, min, max and the count of ``values``."""
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "mean": statistics.fmean(values) if values else math.nan,
        "min": min(values) if values else math.nan,
        "max": max(values) if values else math.nan,
    }


def median_of_rounds(rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The median of each numeric field across rounds (recursing into dictionaries); other values from the
    last round. ``rounds`` keeps every round's numbers in the JSON for whoever wants the spread."""
    if not rounds:
        return {}
    merged: dict[str, Any] = {}
    for key in rounds[-1]:
        values = [r[key] for r in rounds if key in r]
        sample = values[-1]
        if isinstance(sample, bool) or sample is None or isinstance(sample, str | list):
            merged[key] = sample
        elif isinstance(sample, int | float):
            merged[key] = median(float(v) for v in values if isinstance(v, int | float))
        elif isinstance(sample, dict):
            merged[key] = median_of_rounds([v for v in values if isinstance(v, dict)])
        else:
            merged[key] = sample
    return merged


def finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
