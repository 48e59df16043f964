"""The offline training matrix is point-in-time correct: no feature value from after a row's time."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from flywheel.common.offline import FEATURE_TIME, label_frame, training_matrix
from flywheel.schemas import LabelObserved
from tests.unit.test_feature_skew import FEATURES, raw_records

T0 = datetime(2026, 1, 1, 10, tzinfo=UTC)


def at(hours: float) -> str:
    return (T0 + timedelta(hours=hours)).isoformat()


def applications() -> pd.DataFrame:
    """Entity a re-applies with a higher salary at 10:00, 12:00 and 14:00; b once at 11:00."""
    base = raw_records(4)
    rows = [
        base[0] | {"applicant_id": "a", "applied_at": at(0), "salary": 1000.0},
        base[1] | {"applicant_id": "a", "applied_at": at(2), "salary": 2000.0},
        base[2] | {"applicant_id": "a", "applied_at": at(4), "salary": 4000.0},
        base[3] | {"applicant_id": "b", "applied_at": at(1), "salary": 500.0},
    ]
    return pd.DataFrame(rows)


def test_each_label_gets_the_features_its_entity_had_at_that_time_never_later_ones() -> None:
    labels = pd.DataFrame(
        {
            "applicant_id": ["a", "a", "a", "a", "b", "b"],
            "applied_at": [at(1), at(2), at(3.9), at(9), at(0.5), at(1)],
            "approved": [1, 0, 1, 0, 1, 0],
        },
        index=[10, 11, 12, 13, 14, 15],
    )
    matrix = training_matrix(FEATURES, applications(), labels)
    assert list(matrix.index) == [10, 11, 12, 13, 14, 15]  # the events' order and index
    assert matrix["salary"].tolist()[:4] == [1000.0, 2000.0, 2000.0, 4000.0]  # the 12:00 record at 12:00 exactly
    assert math.isnan(matrix.loc[14, "salary"])  # b had not applied yet
    assert matrix.loc[15, "salary"] == 500.0
    known = matrix[FEATURE_TIME].notna()
    assert (matrix[FEATURE_TIME][known] <= pd.to_datetime(labels["applied_at"], utc=True)[known]).all()
    assert matrix["approved"].tolist() == labels["approved"].tolist()


def test_records_after_the_event_do_not_change_its_row() -> None:
    records = applications()
    labels = pd.DataFrame({"applicant_id": ["a"], "applied_at": [at(3)], "approved": [1]})
    before = training_matrix(FEATURES, records[records["applied_at"] <= at(3)], labels)
    later = records.copy()
    later.loc[2, ["salary", "commission", "loan"]] = [9e5, 9e5, 9e5]  # a's 14:00 application, rewritten
    after = training_matrix(FEATURES, later, labels)
    pd.testing.assert_frame_equal(before, after)


def test_max_age_leaves_stale_features_out() -> None:
    labels = pd.DataFrame({"applicant_id": ["a", "a"], "applied_at": [at(1), at(3)], "approved": [1, 0]})
    matrix = training_matrix(FEATURES, applications(), labels, max_age=timedelta(minutes=90))
    assert matrix["salary"].tolist()[0] == 1000.0
    assert matrix["salary"].tolist()[1] == 2000.0
    stale = training_matrix(FEATURES, applications(), labels, max_age=timedelta(minutes=30))
    assert stale["salary"].isna().all() and stale[FEATURE_TIME].isna().all()


def test_rows_without_a_time_or_entity_get_no_features_rather_than_an_error() -> None:
    labels = pd.DataFrame({"applicant_id": ["a", None, "a"], "applied_at": [None, at(5), at(5)], "approved": [1, 0, 1]})
    matrix = training_matrix(FEATURES, applications(), labels)
    assert matrix["salary"].isna().tolist() == [True, True, False]


def test_without_events_each_row_is_its_own_point_in_time_and_matches_the_frame_form() -> None:
    records = pd.DataFrame(raw_records(100))
    matrix = training_matrix(FEATURES, records, label="approved")
    assert list(matrix.columns[:4]) == ["applicant_id", "applied_at", "approved", FEATURE_TIME]
    pd.testing.assert_frame_equal(matrix[FEATURES.names], FEATURES.frame(records))


def test_observed_labels_become_an_events_frame_known_from_their_observation_time() -> None:
    events = [
        LabelObserved(producer="t", dataset="loans", label=1, entity_id="a", observed_at=T0 + timedelta(hours=3)),
        LabelObserved(producer="t", dataset="loans", label=0, prediction_id="p-1"),  # no entity: cannot join
    ]
    frame = label_frame(events, entity_key="applicant_id", timestamp="applied_at", label="approved")
    assert frame.to_dict(orient="records") == [
        {"applicant_id": "a", "applied_at": pd.Timestamp(T0 + timedelta(hours=3)), "approved": 1}
    ]
    assert training_matrix(FEATURES, applications(), frame)["salary"].tolist() == [2000.0]


def test_missing_key_columns_are_named() -> None:
    with pytest.raises(ValueError, match="applied_at"):
        training_matrix(FEATURES, applications(), pd.DataFrame({"applicant_id": ["a"]}))
