"""Shared helpers for benchmarks: a results table and latency percentiles."""

from __future__ import annotations

import statistics


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("   " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))


def mean(samples: list[float]) -> float:
    return statistics.fmean(samples)
