"""Offline features, point-in-time correct: a training matrix that never sees the future.

Two shapes of training data:

- **records only** (a dataset version whose rows carry their own label): every row's
  features come from that row alone, through ``FeatureSet.frame``, so they are
  point-in-time correct by construction;
- **records + a later events frame** (labels observed after the fact, or any "spine"
  of entity/time pairs): each event row takes the features of its entity's latest
  record at or before the event's time (``pandas.merge_asof`` by entity,
  ``direction="backward"``), optionally no older than ``max_age``. A record that
  arrived after the event is never used, even when it is the entity's latest now.

Either way the values are computed by ``FeatureSet.compute`` (through ``frame``), the
one implementation online and serving also run, so offline and online cannot disagree.

Labels that arrive later are data too (sealed batches of ``labels``): ``attach_labels`` is
the one label join of training data. A label names its record, or its entity and the
time of the outcome (then it labels the entity's latest record at or before that time,
never a later one); of several labels for one record the latest observed wins.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

import pandas as pd

from flywheel.common.featuresets import FeatureSet

FEATURE_TIME = "feature_time"
"""The column naming the timestamp of the record each row's features came from."""

_ENTITY, _TIME, _ROW = "__entity", "__time", "__row"

LABEL_ID = "label_event_id"
LABEL_COLUMNS = (LABEL_ID, "record_id", "entity_id", "prediction_id", "label", "observed_at")
"""The columns of a sealed label batch."""


def _times(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values, utc=True, format="ISO8601")


def _entities(values: pd.Series) -> pd.Series:
    return values.where(values.notna(), None).map(lambda v: None if v is None else str(v)).astype(object)


def training_matrix(
    feature_set: FeatureSet,
    records: pd.DataFrame,
    events: pd.DataFrame | None = None,
    *,
    label: str | None = None,
    entity_column: str | None = None,
    timestamp_column: str | None = None,
    max_age: timedelta | None = None,
) -> pd.DataFrame:
    """The feature matrix for training, with no value taken from after a row's timestamp.

    Parameters
    ----------
    feature_set
        The definitions; its ``entity_key`` and ``timestamp`` name the records' columns.
    records
        A dataset version's frame (or any records frame).
    events
        Optional later rows to train on (e.g. observed labels): one output row each, in
        their order and index, with the features of the entity's latest record at or
        before the row's time (NaN when there is none).
    label
        Without ``events``: the records' label column to carry into the matrix.
    entity_column, timestamp_column
        The events' entity and time columns (default: the feature set's names).
    max_age
        Older records than this, relative to the event, do not count (NaN features).

    Returns
    -------
    The events' (or the records' key, time and label) columns, ``feature_time`` (when
    the features were true) and one column per feature.

    >>> fs = FeatureSet(feature_set="f", dataset="d", entity_key="id", timestamp="ts",
    ...     features=[{"name": "income", "inputs": ["salary", "bonus"], "transform": "sum"}])
    >>> records = pd.DataFrame({"id": ["a", "a", "b"], "ts": ["2026-01-01T10:00Z", "2026-01-01T12:00Z",
    ...     "2026-01-01T10:00Z"], "salary": [10.0, 20.0, 5.0], "bonus": [1.0, 2.0, 0.0]})
    >>> labels = pd.DataFrame({"id": ["a", "a", "b"], "ts": ["2026-01-01T11:00Z", "2026-01-01T12:00Z",
    ...     "2026-01-01T09:00Z"], "approved": [1, 0, 1]})
    >>> training_matrix(fs, records, labels)[["id", "approved", "income"]]
      id  approved  income
    0  a         1    11.0
    1  a         0    22.0
    2  b         1     NaN
    """
    entity_key, timestamp = feature_set.entity_key, feature_set.timestamp
    features = feature_set.frame(records)
    clashing = set(feature_set.names) | {FEATURE_TIME}  # a feature's column is the feature's
    if events is None:
        wanted = dict.fromkeys(c for c in (entity_key, timestamp, label) if c is not None)
        keep = [c for c in wanted if c in records.columns and c not in clashing]
        matrix = records[keep].copy()
        if timestamp in records.columns:
            matrix[FEATURE_TIME] = _times(records[timestamp])
        return pd.concat([matrix, features], axis=1)

    entity_column = entity_column or entity_key
    timestamp_column = timestamp_column or timestamp
    for frame, columns, what in (
        (records, (entity_key, timestamp), "records"),
        (events, (entity_column, timestamp_column), "events"),
    ):
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ValueError(f"{what} lack column(s) {missing}; they have {sorted(map(str, frame.columns))}")

    right = features.reset_index(drop=True)
    right[_ENTITY] = _entities(records[entity_key]).to_numpy()
    right[_TIME] = _times(records[timestamp]).to_numpy()
    right[FEATURE_TIME] = right[_TIME]
    right = right[right[_ENTITY].notna() & right[_TIME].notna()]
    right = right.sort_values(_TIME, kind="stable")  # ties: the later row of the version wins

    left = pd.DataFrame({_ROW: range(len(events))})
    left[_ENTITY] = _entities(events[entity_column]).to_numpy()
    left[_TIME] = _times(events[timestamp_column]).to_numpy()
    placeable = left[_ENTITY].notna() & left[_TIME].notna()  # a row without a time cannot be placed: NaN
    joined = pd.merge_asof(
        left[placeable].sort_values(_TIME, kind="stable"),
        right,
        on=_TIME,
        by=_ENTITY,
        direction="backward",
        allow_exact_matches=True,  # a record at the very moment of the event was already known
        tolerance=pd.Timedelta(max_age) if max_age is not None else None,
    )
    joined = pd.concat([joined, left[~placeable]]).set_index(_ROW).sort_index()
    joined = joined.reindex(range(len(events)))
    matrix = events[[c for c in events.columns if c not in clashing]].copy()
    matrix[FEATURE_TIME] = pd.to_datetime(joined[FEATURE_TIME], utc=True).to_numpy()
    for name in feature_set.names:
        matrix[name] = joined[name].astype(float).to_numpy()
    return matrix


def label_frame(events: Iterable[Any], *, entity_key: str, timestamp: str, label: str) -> pd.DataFrame:
    """``LabelObserved`` events as an events frame for ``training_matrix``.

    A label is known from ``observed_at`` (or, without it, when the event occurred);
    events without an ``entity_id`` cannot be joined to records and are left out.
    """
    rows = [
        {entity_key: e.entity_id, timestamp: e.observed_at or e.occurred_at, label: e.label}
        for e in events
        if e.entity_id is not None
    ]
    frame = pd.DataFrame(rows, columns=[entity_key, timestamp, label])
    frame[timestamp] = _times(frame[timestamp])
    return frame


@dataclass(frozen=True)
class LabelJoin:
    """What the label join did, for the run's record."""

    rows: int
    labelled_with_record: int
    labelled_late: int
    unlabelled_left_out: int
    labels: int
    labels_superseded: int
    labels_unmatched: int

    def as_metrics(self) -> dict[str, float]:
        return {f"labels.{k}": float(v) for k, v in asdict(self).items()}


def attach_labels(
    records: pd.DataFrame,
    labels: pd.DataFrame,
    *,
    entity_key: str,
    timestamp: str,
    label: str,
    record_id: str = "record_id",
) -> tuple[pd.DataFrame, LabelJoin]:
    """The records with the outcomes of ``labels`` (a sealed batch's columns) in their ``label`` column.

    A label with a ``record_id`` labels that record; one with only an entity labels the
    entity's latest record at or before its ``observed_at``; one that names neither (only a
    prediction) or matches no record is counted as unmatched. Of several labels for one
    record the latest observed wins (the others are counted as superseded); a late label
    replaces the record's own. Rows left without a label stay, for the caller to leave out.

    >>> records = pd.DataFrame({"record_id": ["r1", "r2", "r3"], "id": ["a", "a", "b"],
    ...     "ts": ["2026-01-01T10:00Z", "2026-01-01T12:00Z", "2026-01-01T10:00Z"], "y": [None, None, 1]})
    >>> labels = pd.DataFrame({"label_event_id": ["e1", "e2", "e3", "e4"], "record_id": ["r1", "r1", None, None],
    ...     "entity_id": [None, None, "a", "b"], "prediction_id": [None] * 4, "label": [0, 1, 1, 0],
    ...     "observed_at": ["2026-01-01T11:00Z", "2026-01-01T11:30Z", "2026-01-01T12:30Z", "2026-01-01T09:00Z"]})
    >>> frame, join = attach_labels(records, labels, entity_key="id", timestamp="ts", label="y")
    >>> [int(v) for v in frame["y"]], join.labelled_late, join.labels_superseded, join.labels_unmatched
    ([1, 1, 1], 2, 1, 1)
    """
    frame = records.copy()
    if label not in frame.columns:
        frame[label] = pd.Series([None] * len(frame), dtype=object)
    own = frame[label].notna()
    if labels.empty or record_id not in frame.columns:
        counts = LabelJoin(len(frame), int(own.sum()), 0, int((~own).sum()), len(labels), 0, len(labels))
        return frame, counts
    targets = _targets(frame, labels, entity_key=entity_key, timestamp=timestamp, record_id=record_id)
    placed = labels.assign(__target=targets, __observed=_times(labels["observed_at"]))
    placed = placed[placed["__target"].notna()]
    latest = placed.sort_values("__observed", kind="stable").drop_duplicates("__target", keep="last")
    outcome = dict(zip(latest["__target"], latest["label"], strict=True))
    late = frame[record_id].astype(str).map(outcome)
    has_late = late.notna() & frame[record_id].notna()
    values = frame[label].astype(object).where(~has_late, late.astype(object))
    frame[label] = values.where(values.notna(), None)
    labelled = frame[label].notna()
    return frame, LabelJoin(
        rows=len(frame),
        labelled_with_record=int((own & ~has_late).sum()),
        labelled_late=int(has_late.sum()),
        unlabelled_left_out=int((~labelled).sum()),
        labels=len(labels),
        labels_superseded=len(placed) - len(latest),
        labels_unmatched=len(labels) - len(placed),
    )


def _targets(
    records: pd.DataFrame, labels: pd.DataFrame, *, entity_key: str, timestamp: str, record_id: str
) -> pd.Series:
    """The record id each label labels (None when it labels none of ``records``)."""
    known = set(records[record_id].dropna().astype(str))
    by_record = labels["record_id"].map(lambda r: str(r) if pd.notna(r) and str(r) in known else None)
    by_entity = labels["record_id"].isna() & labels["entity_id"].notna()
    targets = by_record.astype(object)
    if by_entity.any() and entity_key in records.columns and timestamp in records.columns:
        right = pd.DataFrame(
            {
                _ENTITY: _entities(records[entity_key]).to_numpy(),
                _TIME: _times(records[timestamp]).to_numpy(),
                "__record": records[record_id].astype(str).to_numpy(),
            }
        )
        right = right[right[_ENTITY].notna() & right[_TIME].notna()].sort_values(_TIME, kind="stable")
        left = pd.DataFrame(
            {
                _ROW: labels.index[by_entity],
                _ENTITY: _entities(labels.loc[by_entity, "entity_id"]).to_numpy(),
                _TIME: _times(labels.loc[by_entity, "observed_at"]).to_numpy(),
            }
        ).sort_values(_TIME, kind="stable")
        joined = pd.merge_asof(left, right, on=_TIME, by=_ENTITY, direction="backward", allow_exact_matches=True)
        targets.loc[joined[_ROW].to_numpy()] = joined["__record"].where(joined["__record"].notna(), None).to_numpy()
    return targets
