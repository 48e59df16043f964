"""Serving's view of the online store: each entity's latest feature vector, folded from ``features.online``.

The features service computes every entity's vector and publishes it on ``features.online``, a
compacted topic keyed by dataset and entity, with the record it was computed from (``inputs``)
and the feature-set version (a content hash) it used. Every serving replica reads that topic in
full (no consumer group): on start it folds the topic's history before it answers, then keeps
folding new vectors. A request that names an entity is answered from this view; pure code, no I/O.

How a request by entity becomes the record each model scores (``assemble``):

- the stored record (``inputs``) is the base, and the request's own ``fields`` override it: each
  model then computes its features from that record with its own pinned feature-set version,
  exactly as for a record sent whole (so the answers are equal);
- a feature whose inputs the request's fields all carry is fresh (age 0); every other feature
  is as old as the stored vector (now minus its event time); older than ``max_age_s`` and the
  request is refused (``StaleFeatures``) rather than answered from data the caller did not expect;
- no stored vector (an entity never seen) is ``UnknownEntity``, unless the fields carry every input.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import JsonValue

from flywheel.common.contracts import DataContract, by_dataset
from flywheel.common.featuresets import FeatureSet
from flywheel.schemas import FeaturesComputed

MAX_ENTITY_ID = 1_000


@dataclass(frozen=True, slots=True)
class StoredVector:
    """One entity's latest record, with the feature-set version the features service computed its vector with.

    The vector's values are not kept: every model computes its features from the record with its own
    pinned feature set (``assemble``), so only the record answers a request, and a replica holds
    every entity's, at half the memory.
    """

    event_time: datetime
    feature_set: str
    feature_set_version: str
    inputs: dict[str, JsonValue]


class OnlineView:
    """The latest vector per (dataset, entity): a later event time replaces, an earlier one never does.

    Folding is idempotent, so reading the same vectors twice (the start-up rebuild and the
    subscriber that starts from the topic's beginning) changes nothing.

    >>> view = OnlineView()
    >>> def vector(t, salary):
    ...     return FeaturesComputed(producer="t", dataset="loans", feature_set="f", feature_set_version="1",
    ...         entity_id="a-1", event_time=f"2026-01-01T00:00:0{t}Z", values={"salary": salary},
    ...         inputs={"salary": salary})
    >>> view.apply(vector(2, 10.0)), view.apply(vector(1, 5.0)), view.apply(vector(2, 10.0))
    (True, False, True)
    >>> view.get("loans", "a-1").inputs, len(view)
    ({'salary': 10.0}, 1)
    """

    def __init__(self) -> None:
        self._latest: dict[tuple[str, str], StoredVector] = {}

    def apply(self, vector: FeaturesComputed) -> bool:
        """Fold one vector in; False when the entity already has a newer one."""
        key = (vector.dataset, vector.entity_id)
        current = self._latest.get(key)
        if current is not None and current.event_time > vector.event_time:
            return False
        # one copy of the names every entity shares
        feature_set, version = sys.intern(vector.feature_set), sys.intern(vector.feature_set_version)
        self._latest[key] = StoredVector(vector.event_time, feature_set, version, vector.inputs)
        return True

    def get(self, dataset: str, entity_id: str) -> StoredVector | None:
        return self._latest.get((dataset, entity_id))

    def __len__(self) -> int:
        return len(self._latest)


def refusal(vector: FeaturesComputed, contracts: Mapping[str, DataContract]) -> str | None:
    """Why a vector may not enter the view (it would answer requests); None when it may.

    Features publishes only vectors of records its contract holds, but anyone may write to the
    topic: a vector of an unknown dataset, a record that breaks the contract, or a value that is
    no finite number or short string is dead-lettered by the subscriber and skipped on rebuild.

    >>> contracts = {"d": DataContract(dataset="d", version="1", entity_key="id", timestamp="ts",
    ...     columns={"id": {"type": "str"}, "ts": {"type": "datetime"}, "x": {"type": "float", "max": 10}})}
    >>> def vector(**change):
    ...     return FeaturesComputed(producer="t", dataset="d", feature_set="f", feature_set_version="1",
    ...         entity_id="a", event_time="2026-01-01T00:00:00Z", values={"x": 1.0},
    ...         inputs={"id": "a", "ts": "2026-01-01T00:00:00Z", "x": 1.0}).model_copy(update=change)
    >>> refusal(vector(), contracts) is None
    True
    >>> refusal(vector(dataset="nope"), contracts)
    "vector of dataset 'nope', which has no data contract here; known: ['d']"
    >>> refusal(vector(values={"x": float("nan")}), contracts)
    'vector of entity a: feature x is nan, not a finite number'
    >>> refusal(vector(inputs={"id": "a", "ts": "2026-01-01T00:00:00Z", "x": 1e308}), contracts)
    'vector of entity a: its record breaks the contract of d: x=1e+308 outside [None, 10.0]'
    """
    return refusals([vector], contracts)[0]


def refusals(vectors: list[FeaturesComputed], contracts: Mapping[str, DataContract]) -> list[str | None]:
    """``refusal`` of each vector of a batch; the records of each dataset's vectors are checked together."""
    found = [_shape_refusal(vector, contracts) for vector in vectors]
    for dataset, indexes in by_dataset(vectors).items():
        checked = [i for i in indexes if found[i] is None and vectors[i].inputs]
        if not checked:
            continue
        problems = contracts[dataset].record_problems([vectors[i].inputs for i in checked])
        for i, problem in zip(checked, problems, strict=True):
            if problem:
                entity = vectors[i].entity_id[:80]
                found[i] = f"vector of entity {entity}: its record breaks the contract of {dataset}: {problem}"
    return found


def _shape_refusal(vector: FeaturesComputed, contracts: Mapping[str, DataContract]) -> str | None:
    """Why a vector is refused before its record is checked: its dataset, its entity id, its values."""
    if vector.dataset not in contracts:
        return f"vector of dataset {vector.dataset!r}, which has no data contract here; known: {sorted(contracts)}"
    entity = vector.entity_id[:80]
    if len(vector.entity_id) > MAX_ENTITY_ID:
        return f"vector of entity {entity!r}…: its id has {len(vector.entity_id)} characters, at most {MAX_ENTITY_ID}"
    for name, value in vector.values.items():
        if isinstance(value, float) and not math.isfinite(value):
            return f"vector of entity {entity}: feature {name[:80]} is {value}, not a finite number"
        if isinstance(value, str) and len(value) > MAX_ENTITY_ID:
            return f"vector of entity {entity}: feature {name[:80]} is a string of {len(value)} characters"
    return None


class FeaturesUnavailable(LookupError):
    """An entity's features cannot answer the request; ``status`` is the HTTP status that says why."""

    status = 409

    def __init__(self, entity_id: str, message: str) -> None:
        super().__init__(message)
        self.entity_id = entity_id
        self.message = message


class UnknownEntity(FeaturesUnavailable):
    status = 404


class StaleFeatures(FeaturesUnavailable):
    status = 409


class IncompleteVector(FeaturesUnavailable):
    status = 409


@dataclass(frozen=True)
class Assembled:
    """The record a model scores for an entity, and how old each of its features is."""

    record: dict[str, Any]
    ages_s: dict[str, float]
    from_request: list[str]
    stored: StoredVector | None


def assemble(
    features: FeatureSet,
    entity_id: str,
    stored: StoredVector | None,
    fields: Mapping[str, Any],
    now: datetime,
    max_age_s: float | None,
) -> Assembled:
    """The record of ``entity_id``: the stored one, overridden by request-time ``fields``.

    >>> from datetime import UTC
    >>> fs = FeatureSet(feature_set="f", version="1", dataset="d", entity_key="id", timestamp="ts",
    ...     features=[{"name": "salary", "input": "salary"}, {"name": "age", "input": "age"}])
    >>> stored = StoredVector(datetime(2026, 1, 1, tzinfo=UTC), "f", "1", {"salary": 10.0, "age": 30})
    >>> now = datetime(2026, 1, 1, 0, 1, tzinfo=UTC)
    >>> a = assemble(fs, "e", stored, {"age": 41}, now, max_age_s=300)
    >>> a.record, a.ages_s, a.from_request
    ({'salary': 10.0, 'age': 41, 'id': 'e'}, {'salary': 60.0, 'age': 0.0}, ['age'])
    >>> try:
    ...     assemble(fs, "e", stored, {}, now, max_age_s=30)
    ... except StaleFeatures as stale:
    ...     print(stale.status, stale)
    409 entity 'e': features salary, age are 60 s old, older than the maximum of 30 s
    >>> assemble(fs, "e", None, {"salary": 1, "age": 2}, now, max_age_s=30).record
    {'salary': 1, 'age': 2, 'id': 'e'}
    """
    from_request = [f.name for f in features.features if fields and all(i in fields for i in f.inputs)]
    needed = [name for name in features.names if name not in from_request]
    ages: dict[str, float] = dict.fromkeys(from_request, 0.0)
    base: dict[str, Any] = {}
    if needed:
        if stored is None:
            raise UnknownEntity(
                entity_id,
                f"no feature vector for entity {entity_id[:80]!r} of dataset {features.dataset!r} in the online store",
            )
        if not stored.inputs:
            raise IncompleteVector(
                entity_id,
                f"entity {entity_id[:80]!r}: the stored vector carries no record to compute "
                f"{', '.join(needed[:10])} from (published before vectors carried their inputs); send the record",
            )
        age = max(0.0, (now - stored.event_time).total_seconds())
        if max_age_s is not None and age > max_age_s:
            raise StaleFeatures(
                entity_id,
                f"entity {entity_id[:80]!r}: features {', '.join(needed[:10])} are {age:.0f} s old, "
                f"older than the maximum of {max_age_s:g} s",
            )
        ages |= dict.fromkeys(needed, age)
        base = dict(stored.inputs)
    record = {**base, **fields, features.entity_key: entity_id}
    return Assembled(record, {name: ages[name] for name in features.names}, from_request, stored if needed else None)
