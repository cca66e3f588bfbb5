"""Percentiles and summaries. Pure functions, so tests can check them against known answers."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0 <= q <= 100), interpolating linearly between closest ranks (the
    same definition as numpy's default)."""
    data = sorted(values)
    if not data:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    pos = (len(data) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def summary(values: Sequence[float]) -> dict[str, float]:
    """n, p50, p90, p99, mean, min and max of a sample."""
    if not values:
        raise ValueError("summary of no values")
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "mean": statistics.fmean(values),
        "min": min(values),
        "max": max(values),
    }


def spread(values: Sequence[float]) -> dict[str, float]:
    """The median of repeated measurements and their range."""
    if not values:
        raise ValueError("spread of no values")
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def gaps_ms(spans: Sequence[tuple[int, int]]) -> list[float]:
    """Hand-offs in a chain: from the end of step i to the start of step i+1, in milliseconds,
    given each step's (start_ns, end_ns) on one monotonic clock, in order."""
    return [(spans[i + 1][0] - spans[i][1]) / 1e6 for i in range(len(spans) - 1)]


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def fmt_spread(s: dict[str, float] | None, unit: str = "") -> str:
    """`median (min–max)`, the way BENCHMARKS.md quotes repeated measurements."""
    if not s:
        return "–"
    if s["n"] == 1 or s["min"] == s["max"]:
        return f"{fmt_ms(s['median'])}{unit}"
    return f"{fmt_ms(s['median'])}{unit} ({fmt_ms(s['min'])}–{fmt_ms(s['max'])})"
