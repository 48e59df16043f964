"""Training on late labels: the label batches sealed so far label the records they name, and a drift
retrain waits, by listening to datasets.versioned, for enough labelled rows ingested after the drift.

"After the drift" is on the ingestion clock (when a version was sealed), never the records' own
timestamps: the records here are back-filled history from 2009, the drift is of today."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from flywheel.common.datasets import DatasetCatalog
from flywheel.common.featuresets import load_feature_set
from flywheel.ingestion.versions import seal, seal_labels
from flywheel.schemas import LabelObserved, TrainModel
from flywheel.training.runner import RunContext, fresh_data, labelled, prepare
from tests.unit.test_ingestion_versions import CONTRACT, MemoryStore, validated

DATASETS = Path(__file__).resolve().parents[2] / "datasets"
T0 = datetime(2026, 3, 1, tzinfo=UTC)
HISTORY = datetime(2009, 6, 1, tzinfo=UTC)  # when the back-filled records happened


def context(store: MemoryStore, **fields) -> RunContext:
    return RunContext(
        catalog=DatasetCatalog(store),
        labels=DatasetCatalog.labels(store),
        mlflow=None,  # type: ignore[arg-type]
        datasets_dir=DATASETS,
        code_version="test",
        **fields,
    )


def write_records(store: MemoryStore, ids: range, at: datetime, parent=None, recorded: datetime | None = None):
    """A version sealed at ``at`` whose records happened at ``recorded`` (default: ``at``)."""
    records = [validated(i, approved=None) for i in ids]
    for record in records:
        record.data["applied_at"] = (recorded or at).isoformat()
    manifest, data = seal(records, CONTRACT, parent=parent, offsets={}, bucket="b", created_at=at)
    DatasetCatalog(store).write(manifest, data)
    return manifest


def write_labels(store: MemoryStore, outcomes: dict[int, int], at: datetime, observed: datetime | None = None):
    events = [
        LabelObserved(producer="t", dataset="loans", label=y, record_id=f"r-{i}", observed_at=observed or at)
        for i, y in outcomes.items()
    ]
    manifest, data = seal_labels(events, CONTRACT, parent=None, offsets={}, bucket="b", created_at=at)
    DatasetCatalog.labels(store).write(manifest, data)
    return manifest


def test_records_sent_unlabelled_get_the_outcomes_of_the_label_batches_latest_observed_winning() -> None:
    store = MemoryStore()
    version = write_records(store, range(6), T0)
    write_labels(store, {0: 1, 1: 0, 2: 1}, T0 + timedelta(minutes=1))
    write_labels(store, {2: 0, 99: 1}, T0 + timedelta(minutes=2))  # a correction of r-2; r-99 is unknown
    features = load_feature_set(DATASETS, "loans")
    frame, join, batches = labelled(context(store), "loans", [version], "approved", features)
    got = dict(zip(frame["record_id"], frame["approved"], strict=True))
    assert {k: got[k] for k in ("r-0", "r-1", "r-2")} == {"r-0": 1, "r-1": 0, "r-2": 0}
    assert join.labelled_late == 3 and join.unlabelled_left_out == 3 and len(batches) == 2
    assert join.labels_superseded == 1 and join.labels_unmatched == 1


async def test_a_drift_retrain_waits_for_labelled_rows_ingested_after_the_drift_whatever_their_timestamps() -> None:
    store = MemoryStore()
    old = write_records(store, range(0, 10), T0 - timedelta(minutes=5), recorded=HISTORY)
    write_labels(store, dict.fromkeys(range(0, 10), 1), T0 - timedelta(minutes=4), observed=HISTORY)
    ctx = context(store, drift_fresh_rows=4, drift_fresh_timeout_s=10)
    request = TrainModel(model_name="m", dataset="loans", trigger="drift", producer="t", occurred_at=T0)
    stages: list[str] = []
    waiting = asyncio.create_task(fresh_data(ctx, request, lambda stage, _: stages.append(stage)))
    await asyncio.sleep(0.2)
    # sealed after the drift, but its buffer began before it (its parent was sealed before): not fresh
    straddling = write_records(store, range(10, 16), T0 + timedelta(seconds=2), parent=old, recorded=HISTORY)
    write_labels(store, dict.fromkeys(range(10, 16), 0), T0 + timedelta(seconds=3), observed=HISTORY)
    ctx.arrivals.announce("loans")
    await asyncio.sleep(0.2)
    assert not waiting.done() and "(0 so far)" in stages[-1]
    later = HISTORY + timedelta(days=1)  # history still: a year older than the drift
    fresh = write_records(store, range(16, 22), T0 + timedelta(seconds=5), parent=straddling, recorded=later)
    ctx.arrivals.announce("loans")
    await asyncio.sleep(0.2)
    assert not waiting.done() and "(0 so far)" in stages[-1]  # unlabelled yet
    write_labels(store, {16: 1, 17: 0, 18: 1, 19: 0}, T0 + timedelta(seconds=8), observed=later)
    ctx.arrivals.announce("loans")
    assert [m.version for m in await asyncio.wait_for(waiting, 5)] == [fresh.version]


async def test_without_enough_labelled_rows_in_time_the_newest_versions_are_used() -> None:
    ctx = context(MemoryStore(), drift_fresh_rows=4, drift_fresh_timeout_s=0.1)
    request = TrainModel(model_name="m", dataset="loans", trigger="drift", producer="t", occurred_at=T0)
    assert await fresh_data(ctx, request, lambda *_: None) is None


def test_the_fingerprint_changes_with_the_labelled_rows_not_with_batches_that_label_none_of_them() -> None:
    store = MemoryStore()
    version = write_records(store, range(0, 8), T0)
    write_labels(store, {0: 1, 1: 0, 2: 1}, T0 + timedelta(minutes=1))
    ctx = context(store)
    request = TrainModel(model_name="m", dataset="loans", producer="t")
    first = prepare(ctx, request, lambda *_: None)
    write_labels(store, {99: 1}, T0 + timedelta(minutes=2))  # a batch for records not in any version here
    unchanged = prepare(ctx, request, lambda *_: None)
    assert len(unchanged.label_batches) == 2 and unchanged.fingerprint == first.fingerprint
    write_labels(store, {3: 0}, T0 + timedelta(minutes=3))  # labels one more row of the version
    assert prepare(ctx, request, lambda *_: None).fingerprint != first.fingerprint
    assert first.versions == [version]
