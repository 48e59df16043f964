"""The window of a model's latest served answers, kept in the shapes its checks read.

A drift check reads the window a column per reference feature, and the health check its share of
missing cells, every ``check_every`` answers. Both are kept up to date as each answer comes (one
row written to a ring of columns, one row's cells counted), not rebuilt from the rows at each check.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping
from datetime import datetime

import numpy as np


class Window:
    """The last ``size`` served answers: their features (rows, and a column per watched feature), times and
    latencies.

    >>> window = Window(2)
    >>> window.watch(["x"])
    >>> for x in (1.0, None, 3.0):
    ...     window.add({"x": x, "y": 0.0}, datetime(2026, 1, 1), 5.0)
    >>> len(window), sorted(window.columns()["x"].tolist()), window.missing_rate()
    (2, [3.0, nan], 0.25)
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.rows: deque[Mapping[str, float | None]] = deque(maxlen=size)
        self.times: deque[datetime] = deque(maxlen=size)
        self.latencies: deque[float] = deque(maxlen=size)
        self._missing: deque[tuple[int, int]] = deque(maxlen=size)  # each row's missing cells and cells
        self._missing_cells = self._cells = 0
        self._names: list[str] = []
        self._matrix = np.empty((size, 0))
        self._added = 0

    def watch(self, names: list[str]) -> None:
        """Keep a column of each of these features, from now on: the window's features start anew (a new
        champion's reference); its latencies, the service's, go on."""
        for kept in (self.rows, self.times, self._missing):
            kept.clear()
        self._missing_cells = self._cells = self._added = 0
        self._names = list(names)
        self._matrix = np.empty((self.size, len(self._names)))

    def add(self, features: Mapping[str, float | None], at: datetime, latency_ms: float) -> None:
        if len(self._missing) == self.size:  # the oldest row leaves
            missing, cells = self._missing[0]
            self._missing_cells -= missing
            self._cells -= cells
        missing = sum(1 for v in features.values() if v is None or v != v)  # null or NaN
        self._missing.append((missing, len(features)))
        self._missing_cells += missing
        self._cells += len(features)
        self.rows.append(features)
        self.times.append(at)
        self.latencies.append(latency_ms)
        if self._names:  # a missing feature is NaN, as a null one (numpy converts None to NaN)
            self._matrix[self._added % self.size] = [features.get(name) for name in self._names]
        self._added += 1

    def columns(self) -> dict[str, np.ndarray]:
        """Each watched feature's values in the window (in no particular order; a missing one NaN)."""
        filled = self._matrix[: min(self._added, self.size)]
        return {name: filled[:, j] for j, name in enumerate(self._names)}

    def missing_rate(self) -> float:
        """The share of the window's feature cells that are null or NaN."""
        return self._missing_cells / self._cells if self._cells else 0.0

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[Mapping[str, float | None]]:
        return iter(self.rows)
