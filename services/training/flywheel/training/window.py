"""Which rows a run trains and is judged on: versions, the drift's cut, the window, the out-of-time split.

Pure: manifests and frames in, choices out. Two clocks, each for its own question:

- **Ingestion time** (wall-clock: a manifest's ``created_at``, an event's ``occurred_at``)
  says which data arrived *after a drift*. A drift is detected on live traffic, in wall-clock
  time; the records' own timestamps may be years old (a back-fill, a replay of history), so
  comparing them with the drift's moment says nothing. A version holds only records ingested
  after the drift when the version sealed before it (its parent) was sealed at or after the
  drift: the roller starts a version's buffer after sealing its parent. A version without a
  parent counts when it was itself sealed at or after the drift (a whole upload).
- **Event time** (the data's own ``timestamp`` column) orders the rows *within* the data: the
  window's ``since`` and ``max_age``, the newest ``max_rows``, the down-weighting of old rows,
  and the out-of-time split (the latest rows held out) are all measured on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from flywheel.common.modelspec import ModelSpec, TrainingWindow
from flywheel.schemas import DatasetManifest

VERSION, ROW, TIME = "__version", "__row", "__time"
INTERNAL = (VERSION, ROW, TIME)


class WindowError(ValueError):
    """The data cannot give the rows a run needs (a reason for ``training.failed``)."""


def chain(manifests: list[DatasetManifest], end: str | None = None) -> list[DatasetManifest]:
    """The version ``end`` (default: the newest sealed) and every version before it by ``parent_version``, oldest first.

    >>> def m(v, parent=None): return DatasetManifest(dataset="d", version=v, content_hash=v, row_count=1,
    ...     columns={}, uri="", parent_version=parent)
    >>> [v.version for v in chain([m("a"), m("b", "a"), m("x"), m("c", "b")])]
    ['a', 'b', 'c']
    >>> [v.version for v in chain([m("a"), m("b", "a"), m("x"), m("c", "b")], end="x")]
    ['x']
    """
    if not manifests:
        raise WindowError("no dataset version yet")
    by_version = {m.version: m for m in manifests}
    if end is not None and end not in by_version:
        raise WindowError(f"no version {end!r} of dataset {manifests[0].dataset!r}")
    found = [by_version[end] if end is not None else manifests[-1]]
    seen = {found[0].version}
    while (parent := found[-1].parent_version) in by_version and parent not in seen:
        found.append(by_version[parent])
        seen.add(parent)
    return found[::-1]


def ingested_after(manifests: list[DatasetManifest], moment: datetime) -> list[DatasetManifest]:
    """The versions whose every record was ingested at or after ``moment`` (wall-clock), in order.

    Judged on the ingestion clock only, so records with historical timestamps count by when they
    arrived, not by when they happened.

    >>> from datetime import UTC, datetime, timedelta
    >>> drift = datetime(2026, 12, 1, 22, 0, tzinfo=UTC)
    >>> old = datetime(2009, 1, 1, tzinfo=UTC)  # a replay of history: every record from 2009
    >>> def m(v, sealed_min, parent=None): return DatasetManifest(dataset="d", version=v, content_hash=v,
    ...     row_count=1, columns={}, uri="", parent_version=parent, time_min=old, time_max=old,
    ...     created_at=drift + timedelta(minutes=sealed_min))
    >>> versions = [m("a", -9), m("b", -1, "a"), m("c", 2, "b"), m("d", 4, "c"), m("e", 5)]
    >>> [v.version for v in ingested_after(versions, drift)]  # c straddles: its buffer began before b's seal
    ['d', 'e']
    """
    sealed = {m.version: m.created_at for m in manifests}

    def after(m: DatasetManifest) -> bool:
        started = sealed.get(m.parent_version) if m.parent_version is not None else m.created_at
        return started is not None and started >= moment

    return [m for m in manifests if after(m)]


def in_time_bounds(manifests: list[DatasetManifest], window: TrainingWindow) -> list[DatasetManifest]:
    """The versions that can hold rows inside the window's time bounds (by event time); others are not read.

    >>> from datetime import UTC, datetime
    >>> def m(v, year): return DatasetManifest(dataset="d", version=v, content_hash=v, row_count=1, columns={},
    ...     uri="", time_min=datetime(year, 1, 1, tzinfo=UTC), time_max=datetime(year, 12, 31, tzinfo=UTC))
    >>> [v.version for v in in_time_bounds([m("a", 2001), m("b", 2005), m("c", 2006)], TrainingWindow(max_age="P400D"))]
    ['b', 'c']
    """
    newest = max((m.time_max for m in manifests if m.time_max is not None), default=None)
    cutoff = cutoff_of(window, newest)
    if cutoff is None:
        return list(manifests)
    return [m for m in manifests if m.time_max is None or m.time_max >= cutoff]


def cutoff_of(window: TrainingWindow, newest: Any) -> Any:
    """The earliest event time the window keeps (None: no time bound)."""
    bounds = [pd.Timestamp(window.since)] if window.since is not None else []
    if window.max_age is not None and newest is not None and not pd.isna(newest):
        bounds.append(pd.Timestamp(newest) - pd.Timedelta(window.max_age))
    return max(bounds) if bounds else None


def event_times(rows: pd.DataFrame, timestamp: str | None) -> pd.Series:
    """The rows' event times (UTC); without a timestamp column, the row order stands in for time."""
    if timestamp and timestamp in rows.columns:
        return pd.to_datetime(rows[timestamp], utc=True, format="ISO8601", errors="coerce")
    return pd.Series(pd.Timestamp(0, tz="UTC") + pd.to_timedelta(np.arange(len(rows)), unit="s"), index=rows.index)


def within(rows: pd.DataFrame, window: TrainingWindow) -> pd.DataFrame:
    """The rows (with ``__time``) inside the window: ``since``, ``max_age``, then the newest ``max_rows``.

    >>> rows = pd.DataFrame({TIME: pd.to_datetime(["2001-01-01", "2001-03-01", "2001-03-02", "2001-03-03"], utc=True)})
    >>> len(within(rows, TrainingWindow(max_age="P30D"))), len(within(rows, TrainingWindow(max_rows=2)))
    (3, 2)
    """
    ordered = rows.sort_values(TIME, kind="stable", na_position="first")
    cutoff = cutoff_of(window, ordered[TIME].max() if len(ordered) else None)
    if cutoff is not None:
        ordered = ordered[ordered[TIME] >= cutoff]
    if window.max_rows is not None:
        ordered = ordered.tail(window.max_rows)
    return ordered


def weights(times: pd.Series, half_life: Any) -> np.ndarray | None:
    """``0.5 ** (age / half_life)`` per row, age from the newest row; None without a half-life.

    >>> times = pd.Series(pd.to_datetime(["2001-01-01", "2001-01-11", "2001-01-21"], utc=True))
    >>> weights(times, pd.Timedelta(days=10)).tolist()
    [0.25, 0.5, 1.0]
    """
    if half_life is None or len(times) == 0:
        return None
    age = (times.max() - times) / pd.Timedelta(half_life)
    return np.power(0.5, age.fillna(age.max()).to_numpy(dtype=float))


@dataclass
class Split:
    """The rows of one run: trained on, held out by time (``recent``), held out from before a drift (``before``)."""

    train: pd.DataFrame
    recent: pd.DataFrame
    before: pd.DataFrame | None = None
    sample_weight: np.ndarray | None = None
    drift: str = "none"
    record: dict[str, Any] = field(default_factory=dict)

    def slices(self) -> dict[str, pd.DataFrame]:
        """The held-out slices by name: ``recent``, and ``before`` when there is one."""
        return {"recent": self.recent, **({"before": self.before} if self.before is not None else {})}


def split_rows(rows: pd.DataFrame, spec: ModelSpec, after: set[str] | None = None) -> Split:
    """Choose the window's rows and split them out of time.

    ``rows``: labelled rows with ``__version``, ``__row`` and ``__time``; ``after``: on a drift
    retrain, the versions ingested after the drift (None: not a drift retrain). The latest
    ``holdout`` fraction of the window by event time is ``recent``; a drift retrain also holds out
    a seeded sample of ``before_holdout`` of the pre-drift rows (``before``), which it then does
    not train on.

    >>> from flywheel.common.modelspec import ModelSpec
    >>> spec = ModelSpec(model_name="m", dataset="d", label="y", estimator={"path": "x.Y"},
    ...     window={"max_rows": 8}, evaluation={"holdout": 0.25, "before_holdout": 0.5})
    >>> rows = pd.DataFrame({VERSION: ["a"] * 6 + ["b"] * 4, ROW: list(range(6)) + list(range(4)),
    ...     TIME: pd.date_range("2001-01-01", periods=10, tz="UTC")})
    >>> s = split_rows(rows, spec, after={"b"})
    >>> len(s.train), s.recent[ROW].tolist(), len(s.before), s.drift
    (4, [2, 3], 2, 'keep')
    """
    window = spec.window
    drift, pool, pre = "none", rows, None
    if after is not None:
        is_after = rows[VERSION].isin(after)
        drift = window.on_drift
        if window.on_drift == "after_drift" and is_after.any():
            pool, pre = rows[is_after], within(rows[~is_after], window)
        elif window.on_drift == "after_drift":
            drift = "after_drift_unavailable"  # nothing ingested after the drift yet: the whole window
        else:
            pre = rows[~is_after]
    pool = within(pool, window)
    held = math.ceil(len(pool) * spec.holdout)
    if held < 1 or held >= len(pool):
        raise WindowError(f"{len(pool)} rows cannot be split into training and a held-out {spec.holdout:.0%}")
    train, recent = pool.iloc[: len(pool) - held], pool.iloc[len(pool) - held :]
    before = None
    if pre is not None and drift == "keep":
        pre = train[train.index.isin(pre.index)]
    if pre is not None and len(pre):
        take = math.floor(len(pre) * spec.evaluation.before_holdout)
        before = pre.sample(n=take, random_state=spec.seed).sort_values(TIME, kind="stable") if take else None
        if before is not None and drift == "keep":
            train = train[~train.index.isin(before.index)]
    return Split(
        train=train,
        recent=recent,
        before=before,
        sample_weight=weights(train[TIME], window.half_life),
        drift=drift,
        record=described(window, drift, train, recent, before),
    )


def described(
    window: TrainingWindow, drift: str, train: pd.DataFrame, recent: pd.DataFrame, before: pd.DataFrame | None
) -> dict[str, Any]:
    """The window as chosen and as it came out, for the run's params and lineage (JSON values)."""

    def stamp(value: Any) -> str | None:
        return None if value is None or pd.isna(value) else pd.Timestamp(value).isoformat()

    return {
        **window.model_dump(mode="json"),
        "drift": drift,
        "train_from": stamp(train[TIME].min()),
        "train_to": stamp(train[TIME].max()),
        "recent_from": stamp(recent[TIME].min()),
        "recent_to": stamp(recent[TIME].max()),
        "train_rows": len(train),
        "recent_rows": len(recent),
        "before_rows": 0 if before is None else len(before),
    }
