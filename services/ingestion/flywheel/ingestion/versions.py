"""Sealing validated records into immutable, content-addressed dataset versions (pure: no I/O).

The same records always give the same bytes, hence the same hash and version: rows are
sorted by timestamp then record id, columns follow the contract, dtypes come from it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter
from typing import Any

import pandas as pd

from flywheel.common.contracts import DataContract
from flywheel.common.datasets import LABELS_PREFIX, PREFIX
from flywheel.common.objectstore import parquet_bytes, sha256
from flywheel.common.offline import LABEL_COLUMNS, LABEL_ID
from flywheel.schemas import ColumnSummary, DatasetManifest, LabelObserved, RecordValidated

RECORD_ID = "record_id"
VERSION_LENGTH = 16

DTYPES = {"int": "Int64", "float": "float64", "str": "string", "bool": "boolean"}


@dataclass
class Buffered:
    """Validated records (or labels) of one dataset waiting to be sealed, with where each came from."""

    records: dict[str, Any] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)  # partition -> next offset
    first_at: float | None = None
    key: Callable[[Any], str] = attrgetter("record_id")

    def add(self, record: Any, partition: int, offset: int, now: float) -> bool:
        """Buffer a record (a key seen already is kept once); False when it was a duplicate."""
        self.offsets[str(partition)] = max(self.offsets.get(str(partition), 0), offset + 1)
        if self.key(record) in self.records:
            return False
        self.records[self.key(record)] = record
        if self.first_at is None:
            self.first_at = now
        return True

    def due(self, now: float, max_rows: int, max_age_s: float) -> bool:
        return bool(self.records) and (
            len(self.records) >= max_rows or (self.first_at is not None and now - self.first_at >= max_age_s)
        )


@dataclass
class Held:
    """An item the roller may not seal yet (a label whose record is not known), and where it came from."""

    item: Any
    partition: int
    offset: int
    since: float
    raw: Any


@dataclass
class Waiting:
    """Items held back until they are ready, at most ``wait_s``; they hold the checkpoint back too."""

    held: dict[str, Held] = field(default_factory=dict)

    def hold(self, key: str, held: Held) -> None:
        self.held.setdefault(key, held)

    def release(self, ready: Callable[[Any], bool], now: float, wait_s: float) -> tuple[list[Held], list[Held]]:
        """The held items now ready, and those that waited too long; both are let go."""
        done, expired = [], []
        for key, held in list(self.held.items()):
            if ready(held.item):
                done.append(self.held.pop(key))
            elif now - held.since >= wait_s:
                expired.append(self.held.pop(key))
        return done, expired

    def cap(self, offsets: dict[str, int]) -> dict[str, int]:
        """``offsets`` no further than the first held item of each partition: a restart reads it again.

        >>> w = Waiting({"a": Held(None, 0, 5, 0.0, None)})
        >>> w.cap({"0": 9, "1": 4})
        {'0': 5, '1': 4}
        """
        capped = dict(offsets)
        for held in self.held.values():
            partition = str(held.partition)
            if partition in capped:
                capped[partition] = min(capped[partition], held.offset)
        return capped


def frame_of(records: list[RecordValidated], contract: DataContract) -> pd.DataFrame:
    """The canonical frame: contract columns (plus ``record_id``), contract dtypes, a fixed row order."""
    rows = [{RECORD_ID: r.record_id, **r.data} for r in records]
    frame = pd.DataFrame(rows, columns=[RECORD_ID, *contract.columns])
    for column, rule in contract.columns.items():
        if rule.type == "datetime":
            frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
        else:
            frame[column] = frame[column].astype(DTYPES.get(rule.type, "object"))
    frame[RECORD_ID] = frame[RECORD_ID].astype("string")
    return frame.sort_values([contract.timestamp, RECORD_ID], kind="mergesort").reset_index(drop=True)


def label_frame_of(labels: list[LabelObserved], contract: DataContract) -> pd.DataFrame:
    """A label batch's canonical frame: one row per label event, outcomes typed by the contract."""
    rows = [
        {
            LABEL_ID: str(e.event_id),
            "record_id": e.record_id,
            "entity_id": e.entity_id,
            "prediction_id": e.prediction_id,
            "label": contract.check_label(e.label)[0],
            "observed_at": e.observed_at or e.occurred_at,
        }
        for e in labels
    ]
    frame = pd.DataFrame(rows, columns=list(LABEL_COLUMNS))
    for column in (LABEL_ID, "record_id", "entity_id", "prediction_id"):
        frame[column] = frame[column].astype("string")
    label_type = contract.columns[contract.label].type if contract.label else "str"
    frame["label"] = frame["label"].astype(DTYPES.get(label_type, "object"))
    frame["observed_at"] = pd.to_datetime(frame["observed_at"], utc=True)
    return frame.sort_values(["observed_at", LABEL_ID], kind="mergesort").reset_index(drop=True)


def summarize(frame: pd.DataFrame) -> dict[str, ColumnSummary]:
    """Null rate and basic statistics per column: the data-quality summary of a manifest."""
    summary = {}
    for column in frame.columns:
        series = frame[column]
        figures: dict[str, Any] = {
            "dtype": str(series.dtype),
            "null_rate": float(series.isna().mean()) if len(series) else 0.0,
            "count": int(series.notna().sum()),
        }
        present = series.dropna()
        if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series) and len(present):
            values = present.astype(float)
            figures |= {
                "mean": _finite(values.mean()),
                "std": _finite(values.std(ddof=0)),
                "min": _finite(values.min()),
                "max": _finite(values.max()),
            }
        elif not pd.api.types.is_datetime64_any_dtype(series):
            counts = present.astype(str).value_counts()
            figures |= {"distinct": len(counts), "top_categories": {str(k): int(v) for k, v in counts.head(10).items()}}
        summary[column] = ColumnSummary(**figures)
    return summary


def seal(
    records: list[RecordValidated],
    contract: DataContract,
    *,
    parent: DatasetManifest | None,
    offsets: dict[str, int],
    bucket: str,
    created_at: datetime,
) -> tuple[DatasetManifest, bytes]:
    """The version's Parquet bytes and manifest. ``offsets`` advance the parent's checkpoint."""
    frame = frame_of(records, contract)
    return _sealed(frame, contract, contract.timestamp, "records", parent, offsets, bucket, created_at)


def seal_labels(
    labels: list[LabelObserved],
    contract: DataContract,
    *,
    parent: DatasetManifest | None,
    offsets: dict[str, int],
    bucket: str,
    created_at: datetime,
) -> tuple[DatasetManifest, bytes]:
    """A label batch's Parquet bytes and manifest (``kind: labels``), sealed like a version."""
    frame = label_frame_of(labels, contract)
    return _sealed(frame, contract, "observed_at", "labels", parent, offsets, bucket, created_at)


def _sealed(
    frame: pd.DataFrame,
    contract: DataContract,
    timestamp: str,
    kind: str,
    parent: DatasetManifest | None,
    offsets: dict[str, int],
    bucket: str,
    created_at: datetime,
) -> tuple[DatasetManifest, bytes]:
    data = parquet_bytes(frame)
    digest = sha256(data)
    version = digest[:VERSION_LENGTH]
    times = frame[timestamp].dropna()
    prefix = PREFIX if kind == "records" else LABELS_PREFIX
    manifest = DatasetManifest(
        dataset=contract.dataset,
        version=version,
        content_hash=digest,
        parent_version=parent.version if parent else None,
        row_count=len(frame),
        columns={c: str(t) for c, t in frame.dtypes.items()},
        time_min=times.min().to_pydatetime() if len(times) else None,
        time_max=times.max().to_pydatetime() if len(times) else None,
        quality=summarize(frame),
        uri=f"s3://{bucket}/{prefix}/{contract.dataset}/{version}/data.parquet",
        contract_version=contract.version,
        created_at=created_at,
        source_offsets=merge_offsets((parent.source_offsets or {}) if parent else {}, offsets),
        kind=kind,
    )
    return manifest, data


def merge_offsets(*checkpoints: dict[str, int]) -> dict[str, int]:
    """Per partition, the furthest of several checkpoints (partition -> next offset).

    >>> merge_offsets({"0": 5, "1": 3}, {"0": 12})
    {'0': 12, '1': 3}
    """
    merged: dict[str, int] = {}
    for checkpoint in checkpoints:
        for partition, offset in checkpoint.items():
            merged[partition] = max(merged.get(partition, 0), offset)
    return dict(sorted(merged.items(), key=lambda item: int(item[0])))


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None
