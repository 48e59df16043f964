"""Training windows in rows and event time, the drift's cut on the ingestion clock, the out-of-time split."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from flywheel.common.modelspec import ModelSpec
from flywheel.schemas import DatasetManifest
from flywheel.training.window import (
    ROW,
    TIME,
    VERSION,
    WindowError,
    chain,
    in_time_bounds,
    ingested_after,
    split_rows,
    within,
)

DRIFT = datetime(2026, 12, 1, 22, 0, tzinfo=UTC)  # wall-clock, when monitoring saw the drift
HISTORY = datetime(2011, 1, 1, tzinfo=UTC)  # the back-filled records' own time


def spec(**fields) -> ModelSpec:
    return ModelSpec(model_name="m", dataset="d", label="y", estimator={"path": "x.Y"}, **fields)


def manifest(version: str, sealed: datetime, parent: str | None = None, day: int = 0) -> DatasetManifest:
    at = HISTORY + timedelta(days=day)
    return DatasetManifest(
        dataset="d",
        version=version,
        content_hash=version,
        row_count=10,
        columns={},
        uri="",
        parent_version=parent,
        time_min=at,
        time_max=at + timedelta(hours=23),
        created_at=sealed,
    )


def rows(versions: dict[str, int], start: datetime = HISTORY) -> pd.DataFrame:
    """``n`` rows per version, one a day in version order: version a's days come before b's."""
    parts, day = [], 0
    for version, n in versions.items():
        parts.append(
            pd.DataFrame(
                {VERSION: version, ROW: range(n), TIME: [start + timedelta(days=day + i) for i in range(n)]},
            )
        )
        day += n
    frame = pd.concat(parts, ignore_index=True)
    frame[TIME] = pd.to_datetime(frame[TIME], utc=True)
    return frame


def test_back_filled_history_ingested_after_the_drift_counts_as_after_it() -> None:
    # every record is 15 years older than the drift: by event time nothing would ever be "after" it
    versions = [
        manifest("a", DRIFT - timedelta(minutes=10), day=0),
        manifest("b", DRIFT - timedelta(seconds=1), "a", day=1),
        manifest("c", DRIFT + timedelta(seconds=20), "b", day=2),  # buffered from before the drift on
        manifest("d", DRIFT + timedelta(seconds=40), "c", day=3),
        manifest("e", DRIFT + timedelta(seconds=60), "d", day=4),
    ]
    assert all(m.time_max < DRIFT for m in versions)
    assert [m.version for m in ingested_after(versions, DRIFT)] == ["d", "e"]
    assert ingested_after(versions, DRIFT + timedelta(days=1)) == []


def test_a_whole_upload_without_a_parent_counts_by_its_own_seal() -> None:
    versions = [manifest("old", DRIFT - timedelta(hours=1)), manifest("upload", DRIFT + timedelta(minutes=1))]
    assert [m.version for m in ingested_after(versions, DRIFT)] == ["upload"]


def test_the_chain_of_a_version_is_its_history_and_nothing_else() -> None:
    versions = [
        manifest("a", DRIFT),
        manifest("b", DRIFT, "a"),
        manifest("other", DRIFT),  # e.g. an upload with no parent
        manifest("c", DRIFT, "b"),
    ]
    assert [m.version for m in chain(versions)] == ["a", "b", "c"]
    assert [m.version for m in chain(versions, "b")] == ["a", "b"]
    assert [m.version for m in chain(versions, "other")] == ["other"]
    with pytest.raises(WindowError, match="no version"):
        chain(versions, "nope")
    with pytest.raises(WindowError, match="no dataset version"):
        chain([])


def test_versions_wholly_older_than_the_window_are_not_read() -> None:
    versions = [manifest(v, DRIFT, day=day) for v, day in (("a", 0), ("b", 40), ("c", 60))]
    assert [m.version for m in in_time_bounds(versions, spec(window={"max_age": "P30D"}).window)] == ["b", "c"]
    since = HISTORY + timedelta(days=50)
    assert [m.version for m in in_time_bounds(versions, spec(window={"since": since}).window)] == ["c"]
    assert len(in_time_bounds(versions, spec(window={"max_rows": 5}).window)) == 3  # rows: no time bound


@pytest.mark.parametrize(
    ("window", "kept"),
    [
        ({}, 100),
        ({"max_rows": 30}, 30),
        ({"max_age": "P9D"}, 10),  # the newest day and the 9 before it
        ({"since": HISTORY + timedelta(days=90)}, 10),
        ({"max_age": "P50D", "max_rows": 20}, 20),
    ],
)
def test_the_window_keeps_rows_by_event_time_and_count(window, kept) -> None:
    frame = rows({"a": 60, "b": 40}).sample(frac=1.0, random_state=1)  # order of arrival is not time
    chosen = within(frame, spec(window=window).window)
    assert len(chosen) == kept
    assert chosen[TIME].is_monotonic_increasing and chosen[TIME].max() == frame[TIME].max()


def test_the_held_out_slice_is_the_latest_by_event_time_not_a_random_sample() -> None:
    frame = rows({"a": 100}).sample(frac=1.0, random_state=3)
    split = split_rows(frame, spec(evaluation={"holdout": 0.2}))
    assert len(split.recent) == 20 and len(split.train) == 80
    assert split.train[TIME].max() < split.recent[TIME].min()  # trained only on the past of what it is judged on
    assert split.before is None and split.drift == "none" and split.sample_weight is None
    assert split.record["recent_rows"] == 20 and split.record["train_rows"] == 80


def test_a_drift_retrain_keeps_pre_drift_rows_by_default_and_holds_some_out() -> None:
    frame = rows({"a": 60, "b": 40})  # b ingested after the drift
    split = split_rows(frame, spec(evaluation={"holdout": 0.25, "before_holdout": 0.1}), after={"b"})
    assert split.drift == "keep"
    assert len(split.recent) == 25 and set(split.recent[VERSION]) == {"b"}
    assert len(split.before) == 6 and set(split.before[VERSION]) == {"a"}
    assert set(split.train[VERSION]) == {"a", "b"} and len(split.train) == 100 - 25 - 6
    keys = lambda f: set(zip(f[VERSION], f[ROW], strict=True))  # noqa: E731
    assert not keys(split.before) & keys(split.train) and not keys(split.recent) & keys(split.train)


def test_a_spec_may_train_a_drift_retrain_on_rows_after_the_drift_only() -> None:
    frame = rows({"a": 60, "b": 40})
    split = split_rows(frame, spec(window={"on_drift": "after_drift"}), after={"b"})
    assert split.drift == "after_drift" and set(split.train[VERSION]) == {"b"} and len(split.recent) == 10
    assert set(split.before[VERSION]) == {"a"} and len(split.before) == 6  # judged on the old concept still
    nothing_after = split_rows(frame, spec(window={"on_drift": "after_drift"}), after=set())
    assert nothing_after.drift == "after_drift_unavailable" and len(nothing_after.train) == 75


def test_half_life_weights_old_rows_down() -> None:
    frame = rows({"a": 41})
    split = split_rows(frame, spec(window={"half_life": "P10D"}, evaluation={"holdout": 0.02}))
    weights = split.sample_weight
    assert weights is not None and len(weights) == len(split.train) == 40
    assert weights[-1] == 1.0 and weights[0] == pytest.approx(0.5 ** (39 / 10))  # age from the newest trained on
    assert np.all(np.diff(weights) > 0)


def test_too_few_rows_to_hold_any_out_is_refused() -> None:
    with pytest.raises(WindowError, match="cannot be split"):
        split_rows(rows({"a": 1}), spec())


def test_window_versions_is_retired_with_a_pointer_to_the_window() -> None:
    with pytest.raises(ValidationError, match="window_versions is retired"):
        spec(window_versions=3)
    with pytest.raises(ValidationError, match="window_versions is retired"):
        spec().with_overrides({"window_versions": 2})
    assert spec(test_size=0.3).holdout == 0.3 and spec(test_size=0.3, evaluation={"holdout": 0.1}).holdout == 0.1
