"""Train/serve skew is impossible by construction: the three callers compute identical features.

- the feature service (online store) folds validated records through ``FeatureSet.compute``;
- serving scores ``FeatureSet.matrix`` rows of the raw request;
- training reads a dataset version (Parquet, as ingestion seals it) through ``FeatureSet.frame``.
"""

from __future__ import annotations

import io
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
from river.datasets import synth

from flywheel.common.contracts import load_contracts
from flywheel.common.featuresets import load_feature_set
from flywheel.common.kafka import SeenEvents
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

    assert len(online) == len(served) == len(offline) == 400
    mismatches = [
        (entity, name, online[entity][name], served[entity][i], offline.loc[entity, name])
        for entity in served
        for i, name in enumerate(FEATURES.names)
        if not (same(online[entity][name], served[entity][i]) and same(served[entity][i], offline.loc[entity, name]))
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
