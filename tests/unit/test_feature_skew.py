"""Train/serve skew is impossible by construction: the three callers compute identical features.

- the feature service (online store) folds validated records through ``FeatureSet.compute``;
- serving scores ``FeatureSet.matrix`` rows of the raw request;
- training reads a dataset version (Parquet, as ingestion seals it) through ``FeatureSet.frame``
  and the point-in-time ``training_matrix`` (labels observed after the records).

Hypothesis is not a dependency of the workspace, so the inputs are a few hundred records of
river's Agrawal generator plus hand-made edge values, and a seeded random mix of nulls, NaN,
pandas' NA, missing keys, zeros, negatives and huge numbers over every transform.
"""

from __future__ import annotations

import io
import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from river.datasets import synth

from flywheel.common.contracts import load_contracts
from flywheel.common.featuresets import FeatureSet, load_feature_set
from flywheel.common.kafka import SeenEvents
from flywheel.common.offline import training_matrix
from flywheel.features.store import OnlineStore
from flywheel.ingestion.validation import validate
from flywheel.ingestion.versions import seal
from flywheel.schemas import RecordSubmitted, RecordValidated

DATASETS = Path(__file__).resolve().parents[2] / "datasets"
CONTRACTS = load_contracts(DATASETS)
FEATURES = load_feature_set(DATASETS, "loans")
FLOATS = {"salary", "commission", "hvalue", "loan"}


def raw_records(n: int) -> list[dict]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    records = [
        {
            "applicant_id": f"e-{i}",
            "applied_at": (start + timedelta(seconds=i)).isoformat(),
            **{k: float(v) if k in FLOATS else int(v) for k, v in x.items()},
            "approved": int(y),
        }
        for i, (x, y) in enumerate(synth.Agrawal(classification_function=1, seed=3).take(n))
    ]
    # edge values: zero income (ratio's zero denominator), a null label, the contract's bounds
    records[0] |= {"salary": 0.0, "commission": 0.0}
    records[1] |= {"approved": None}
    records[2] |= {"age": 18, "hvalue": 0.0, "loan": 1_000_000.0}
    return records


def same(a: float | None, b: float | None) -> bool:
    a = math.nan if a is None else a
    b = math.nan if b is None else b
    return (math.isnan(a) and math.isnan(b)) or a == b


def test_feature_service_serving_and_training_compute_identical_values() -> None:
    raw = raw_records(400)
    seen = SeenEvents()
    validated = []
    for record in raw:
        outcome = validate(
            RecordSubmitted(producer="t", dataset="loans", record_id=record["applicant_id"], data=record),
            CONTRACTS,
            seen,
        )
        assert isinstance(outcome, RecordValidated), outcome
        validated.append(outcome)

    store = OnlineStore({"loans": FEATURES})
    for record in validated:
        store.apply(record)
    online = {entity: stored.values for (_, entity), stored in store.latest.items()}

    served = dict(zip((r["applicant_id"] for r in raw), FEATURES.matrix(raw), strict=True))

    _, parquet = seal(validated, CONTRACTS["loans"], parent=None, offsets={}, bucket="b", created_at=datetime.now(UTC))
    version = pd.read_parquet(io.BytesIO(parquet))
    offline = FEATURES.frame(version)
    offline.index = version["applicant_id"]
    labels = version[["applicant_id", "applied_at", "approved"]].assign(
        applied_at=version["applied_at"] + pd.Timedelta(seconds=30)  # a label is observed after the record
    )
    trained = training_matrix(FEATURES, version, labels).set_index("applicant_id")

    assert len(online) == len(served) == len(offline) == len(trained) == 400
    mismatches = [
        (entity, name, online[entity][name], served[entity][i], offline.loc[entity, name], trained.loc[entity, name])
        for entity in served
        for i, name in enumerate(FEATURES.names)
        if not all(
            same(online[entity][name], other)
            for other in (served[entity][i], offline.loc[entity, name], trained.loc[entity, name])
        )
    ]
    assert mismatches == []
    assert online["e-0"]["loan_to_income"] == 0.0  # the zero-income edge really was computed


def test_offline_features_are_point_in_time_correct() -> None:
    """A row's features depend on that row only: later records never leak into earlier rows."""
    raw = raw_records(50)
    frame = pd.DataFrame(raw)
    before = FEATURES.frame(frame.iloc[:25])
    changed = frame.copy()
    changed.loc[25:, ["salary", "commission", "loan", "hvalue", "age"]] = [1.0, 2.0, 3.0, 4.0, 99]
    after = FEATURES.frame(changed).iloc[:25]
    pd.testing.assert_frame_equal(before, after)


EVERY_TRANSFORM = FeatureSet(
    feature_set="edges",
    dataset="edges",
    entity_key="id",
    timestamp="ts",
    features=[
        {"name": "x", "input": "x"},
        {"name": "log_x", "input": "x", "transform": "log1p"},
        {"name": "total", "inputs": ["x", "y"], "transform": "sum"},
        {"name": "share", "inputs": ["x", "y", "z"], "transform": "ratio"},
        {"name": "is_b", "input": "grade", "transform": "one_hot", "value": "b"},
        {"name": "is_two", "input": "n", "transform": "one_hot", "value": 2},
        {"name": "bounded", "input": "x", "transform": "clip", "min": -1.0, "max": 100.0},
        {"name": "band", "input": "n", "transform": "bucket", "edges": [1, 3]},
    ],
)


def edge_records(n: int, seed: int = 11) -> list[dict]:
    rng = random.Random(seed)
    numbers = [None, 0.0, -0.0, -1.0, -0.5, 1e-300, 1e300, -1e300, 7.25, 100.0, 1e6]
    records = []
    for i in range(n):
        record = {
            "id": f"e-{i}",
            "ts": f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}+00:00",
            "x": rng.choice(numbers),
            "y": rng.choice(numbers),
            "z": rng.choice(numbers),
            "grade": rng.choice([None, "a", "b", "c"]),
            "n": rng.choice([None, 0, 1, 2, 3, 4]),
        }
        for key in ("x", "y", "z", "grade", "n"):
            if rng.random() < 0.1:
                del record[key]  # a field the request did not send at all
        records.append(record)
    return records


@pytest.mark.parametrize("offline_dtypes", ["sealed", "from_json"])
def test_nulls_missing_fields_and_edge_values_give_the_same_features_everywhere(offline_dtypes: str) -> None:
    raw = edge_records(600)
    store = OnlineStore({"edges": EVERY_TRANSFORM})
    for record in raw:
        store.apply(
            RecordValidated(
                producer="t",
                dataset="edges",
                record_id=record["id"],
                entity_id=record["id"],
                event_time=record["ts"],
                data=record,
                contract_version="1",
            )
        )
    online = {entity: stored.values for (_, entity), stored in store.latest.items()}
    served = dict(zip((r["id"] for r in raw), EVERY_TRANSFORM.matrix(raw), strict=True))
    # offline as a dataset version holds them (nullable dtypes: a null is pandas' NA), or as a frame
    # built straight from the JSON records (object columns: a missing field is a float NaN)
    version = pd.DataFrame(raw)
    if offline_dtypes == "sealed":
        version = version.astype({"x": "float64", "y": "float64", "z": "float64", "grade": "string", "n": "Int64"})
    frame = EVERY_TRANSFORM.frame(version).set_index(version["id"])
    trained = training_matrix(EVERY_TRANSFORM, version, version[["id", "ts"]]).set_index("id")
    mismatches = [
        (entity, name, online[entity][name], served[entity][i], frame.loc[entity, name], trained.loc[entity, name])
        for entity in served
        for i, name in enumerate(EVERY_TRANSFORM.names)
        if not all(
            same(online[entity][name], other)
            for other in (served[entity][i], frame.loc[entity, name], trained.loc[entity, name])
        )
    ]
    assert mismatches == []
    assert any(v["share"] == 0.0 for v in online.values())  # the zero-denominator edge was reached
    assert any(v["is_b"] is None for v in online.values()) and any(v["band"] is None for v in online.values())


@pytest.mark.parametrize(
    "absurd", [10**401, -(10**401), 1e308, -1.7976931348623157e308, math.inf, -math.inf, [1, 2], {"a": 1}]
)
def test_an_absurd_input_is_a_missing_feature_never_an_infinity_or_an_exception(absurd) -> None:
    record = {"id": "e", "ts": "2026-01-01T00:00:00+00:00", "x": absurd, "y": 1e308, "z": 1e-308, "n": 2}
    online = EVERY_TRANSFORM.compute(record)
    offline = EVERY_TRANSFORM.frame(pd.DataFrame([record], dtype=object)).iloc[0].to_dict()
    assert all(math.isnan(v) or math.isfinite(v) for v in online.values()), online
    assert all(same(online[name], offline[name]) for name in EVERY_TRANSFORM.names), (online, offline)
    assert math.isnan(online["x"]) == (not isinstance(absurd, float) or math.isinf(absurd))
    assert online["is_two"] == 1.0


# -- a batch, a column at a time ------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

EVERY_SHAPE = FeatureSet(
    feature_set="shapes",
    dataset="shapes",
    entity_key="id",
    timestamp="ts",
    features=[
        *EVERY_TRANSFORM.features,
        {"name": "total3", "inputs": ["x", "y", "z"], "transform": "sum"},
        {"name": "alone", "inputs": ["y"], "transform": "sum"},
        {"name": "over", "inputs": ["x", "y"], "transform": "ratio"},
        {"name": "unsorted", "input": "x", "transform": "bucket", "edges": [5, -1, 3]},
        {"name": "free", "input": "y", "transform": "clip"},
        {"name": "floor", "input": "x", "transform": "clip", "min": 0.0},
        {"name": "none_over", "input": "x", "transform": "ratio"},
    ],
)
AN_INPUT = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([10**400, 0, 1, 2, 3, -1, -0.0]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["b", "c", "7"]),
)


def same_numbers(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(
        (x != x and y != y) or (x == y and math.copysign(1, x) == math.copysign(1, y))
        for x, y in zip(a, b, strict=True)
    )


A_PLAIN_NUMBER = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(10**6), 10**6))
ANY_BATCH = st.lists(st.dictionaries(st.sampled_from(["x", "y", "z", "grade", "n"]), AN_INPUT), min_size=1, max_size=20)
# columns of plain numbers, long enough to be converted at once
PLAIN_BATCH = st.lists(
    st.fixed_dictionaries({k: A_PLAIN_NUMBER for k in ("x", "y", "z", "n")}), min_size=8, max_size=20
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(ANY_BATCH, PLAIN_BATCH))
def test_a_batch_computed_a_column_at_a_time_gives_each_record_the_vector_it_has_alone(records):
    """A plain column converts at once, any other value by value: the outcome must not depend on the company
    a record keeps in its batch (serving's micro-batches, the feature service's batches, a training frame)."""
    batch = EVERY_SHAPE.matrix(records)
    for record, row in zip(records, batch, strict=True):
        assert same_numbers(row, EVERY_SHAPE.vector(record)), record


def test_a_bound_keeps_the_inputs_own_zero_and_a_ratio_of_one_input_is_zero_as_fsum_of_nothing_is():
    edges = FeatureSet(
        feature_set="e",
        dataset="e",
        entity_key="id",
        timestamp="ts",
        features=[
            {"name": "floor", "input": "x", "transform": "clip", "min": 0.0},
            {"name": "ceiling", "input": "x", "transform": "clip", "max": 0.0},
            {"name": "alone", "input": "x", "transform": "ratio"},
        ],
    )
    floor, ceiling, alone = edges.vector({"x": -0.0})
    assert math.copysign(1, floor) == -1 and math.copysign(1, ceiling) == -1  # as max(-0.0, 0.0), min(-0.0, 0.0)
    assert alone == 0.0 and math.isnan(edges.vector({"x": None})[2])
    assert edges.matrix([{"x": -3.0}, {"x": 5.0}]) == [[0.0, -3.0, 0.0], [5.0, 0.0, 0.0]]
