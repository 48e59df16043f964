"""The online store: the latest feature vector per entity and streaming statistics per feature.

Pure: records in, vectors out. The feature values come from the shared ``FeatureSet``,
the same code training and serving run, so the three cannot disagree.

Vectors are computed with the current version of each feature set (today's
``features.yaml``) and name it. A reader pinned to another version (a model trained
before an edit) computes its own from the entity's latest record, which the store keeps
(``Stored.record``, and ``inputs`` on every published vector).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL

from river import stats

from flywheel.common.contracts import by_dataset
from flywheel.common.featuresets import FeatureSet
from flywheel.schemas import FeaturesComputed, RecordValidated, name_id

PRODUCER = "features"


@dataclass
class FeatureStatistics:
    """Running figures of one feature (river's streaming statistics); NaN counts as missing."""

    count: int = 0
    missing: int = 0
    mean: stats.Mean = field(default_factory=stats.Mean)
    var: stats.Var = field(default_factory=stats.Var)
    low: stats.Min = field(default_factory=stats.Min)
    high: stats.Max = field(default_factory=stats.Max)

    def update(self, value: float) -> None:
        self.count += 1
        if value is None or math.isnan(value):
            self.missing += 1
            return
        for statistic in (self.mean, self.var, self.low, self.high):
            statistic.update(value)

    def as_dict(self) -> dict[str, float | int | None]:
        seen = self.count - self.missing
        return {
            "count": self.count,
            "missing_rate": self.missing / self.count if self.count else 0.0,
            "mean": self.mean.get() if seen else None,
            "std": math.sqrt(self.var.get()) if seen > 1 else None,
            "min": self.low.get() if seen else None,
            "max": self.high.get() if seen else None,
        }


@dataclass
class Stored:
    values: dict[str, float | None]
    event_time: datetime
    record_id: str
    record: dict[str, Any] = field(default_factory=dict)

    def values_of(self, feature_set: FeatureSet) -> dict[str, float | None]:
        """The entity's vector by another version of its feature set, from the record it came from."""
        return {k: (None if math.isnan(v) else v) for k, v in feature_set.compute(self.record).items()}


class OnlineStore:
    def __init__(self, feature_sets: dict[str, FeatureSet]) -> None:
        self.feature_sets = feature_sets
        self.latest: dict[tuple[str, str], Stored] = {}
        self.statistics: dict[str, dict[str, FeatureStatistics]] = {
            name: {f: FeatureStatistics() for f in fs.names} for name, fs in feature_sets.items()
        }

    def vectors(self, records: list[RecordValidated]) -> list[dict[str, float] | None]:
        """Each record's feature vector, each dataset's computed together (None: no feature set for its dataset, or
        its batch failed to compute: ``apply`` computes it alone)."""
        found: list[dict[str, float] | None] = [None] * len(records)
        for dataset, indexes in by_dataset(records).items():
            feature_set = self.feature_sets.get(dataset)
            if feature_set is None:
                continue
            try:
                rows = feature_set.matrix([records[i].data for i in indexes])
            except Exception:
                continue
            for i, row in zip(indexes, rows, strict=True):
                found[i] = dict(zip(feature_set.names, row, strict=True))
        return found

    def apply(
        self, record: RecordValidated, *, count: bool = True, values: dict[str, float] | None = None
    ) -> FeaturesComputed | None:
        """Fold one validated record in; the entity's new vector, or None when it is older than the stored one.

        ``count=False`` (a record seen before: a redelivery, or one the start-up replay
        already folded in) leaves the statistics alone; the latest vector is idempotent anyway.
        ``values``: its vector, computed with its batch's (``vectors``).
        """
        feature_set = self.feature_sets.get(record.dataset)
        if feature_set is None:
            return None
        values = values if values is not None else feature_set.compute(record.data)
        if count:
            for name, value in values.items():
                self.statistics[record.dataset][name].update(value)
        key = (record.dataset, record.entity_id)
        current = self.latest.get(key)
        if current is not None and current.event_time > record.event_time:
            return None  # a late record never overwrites a newer vector
        plain = {k: (None if math.isnan(v) else v) for k, v in values.items()}
        self.latest[key] = Stored(plain, record.event_time, record.record_id, record.data)
        return FeaturesComputed(
            # one record, one vector event: a republished vector (a redelivered record) dedups downstream
            event_id=name_id(NAMESPACE_URL, f"flywheel:features:{record.event_id}"),
            producer=PRODUCER,
            dataset=record.dataset,
            feature_set=feature_set.feature_set,
            feature_set_version=feature_set.version,
            entity_id=record.entity_id,
            event_time=record.event_time,
            values=plain,
            inputs=record.data,
            **record.caused(),
        )

    def entities(self, dataset: str | None = None) -> int:
        return sum(1 for d, _ in self.latest if dataset in (None, d))
