"""The demo stream generator: records the contract accepts, deterministic, with the drift where asked."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
from river.datasets import synth

from flywheel.common.contracts import load_contracts
from flywheel.common.featuresets import load_feature_set
from flywheel.common.offline import training_matrix
from flywheel.demo.generator import loan_stream

DATASETS = Path(__file__).resolve().parents[2] / "datasets"
CONTRACT = load_contracts(DATASETS)["loans"]
FEATURES = load_feature_set(DATASETS, "loans")


def take(n: int, **kwargs) -> list:
    return list(itertools.islice(loan_stream(**kwargs), n))


def test_every_record_passes_the_loans_contract() -> None:
    for application, label in take(300, drift_at=150):
        _, violations = CONTRACT.check({**application, "approved": label})
        assert violations == [], violations


def test_the_same_seed_gives_the_same_stream_and_another_seed_another() -> None:
    assert take(50, seed=7) == take(50, seed=7)
    assert take(50, seed=7) != take(50, seed=8)


def test_the_concept_changes_at_the_drift_point() -> None:
    stable = take(2000, function_before=0, seed=5)
    drifted = take(2000, function_before=0, function_after=2, drift_at=1000, seed=5)
    assert stable[:1000] == drifted[:1000]
    labels_after = [y for _, (_, y) in zip(range(1000), synth.Agrawal(classification_function=2, seed=6), strict=False)]
    assert [y for _, y in drifted[1000:]] == labels_after  # from the change on, function 2 decides


def test_a_gradual_drift_mixes_both_concepts() -> None:
    assert len(take(400, drift_at=200, drift_width=100)) == 400


def test_event_times_follow_the_rate_so_delayed_labels_join_to_their_applications() -> None:
    start = datetime(2026, 3, 1, tzinfo=UTC)
    stream = take(200, start=start, interval=timedelta(milliseconds=20), seed=3)
    records = pd.DataFrame([{**application, "approved": None} for application, _ in stream])
    assert records["applied_at"].iloc[-1] == (start + 199 * timedelta(milliseconds=20)).isoformat()
    labels = pd.DataFrame(
        {
            "applicant_id": records["applicant_id"],
            "applied_at": pd.to_datetime(records["applied_at"], utc=True, format="ISO8601") + timedelta(seconds=2),
            "approved": [label for _, label in stream],
        }
    )
    matrix = training_matrix(FEATURES, records, labels)
    assert matrix[FEATURES.names].notna().all().all()
    pd.testing.assert_frame_equal(matrix[FEATURES.names], FEATURES.frame(records), check_index_type=False)
