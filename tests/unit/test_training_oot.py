"""A whole training run on back-filled history, logged to a real (SQLite) MLflow: the out-of-time slices,
the training data recorded for monitoring's reference, and an identical request answered by the same run."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from river.datasets import synth

from flywheel.common.datasets import DatasetCatalog
from flywheel.common.objectstore import parquet_bytes, sha256
from flywheel.common.trainingdata import ROWS_ARTIFACT, load_training_data, training_data_of_run
from flywheel.monitoring.reference import load_reference
from flywheel.schemas import DatasetManifest, ModelTrained, TrainModel
from flywheel.training.runner import FINGERPRINT_TAG, RunContext, train
from tests.unit.test_ingestion_versions import MemoryStore

DATASETS = Path(__file__).resolve().parents[2] / "datasets"
DRIFT = datetime(2026, 12, 1, 22, 0, tzinfo=UTC)  # when monitoring saw the drift (wall-clock)
HISTORY = datetime(2011, 1, 1, tzinfo=UTC)  # when the back-filled records happened
CONTRACT_COLUMNS = {"applicant_id", "applied_at", "salary", "commission", "age", "loan", "approved"}
FAST = {"max_iter": 30}


def agrawal(n: int, function: int, seed: int, start: datetime) -> pd.DataFrame:
    stream = synth.Agrawal(classification_function=function, seed=seed)
    return pd.DataFrame(
        [
            {"applicant_id": f"a-{seed}-{i}", "applied_at": start + timedelta(hours=i), **x, "approved": int(y)}
            for i, (x, y) in enumerate(stream.take(n))
        ]
    )


def put(store: MemoryStore, version: str, frame: pd.DataFrame, sealed: datetime, parent: str | None) -> None:
    data = parquet_bytes(frame)
    manifest = DatasetManifest(
        dataset="loans",
        version=version,
        content_hash=sha256(data),
        parent_version=parent,
        row_count=len(frame),
        columns={c: str(t) for c, t in frame.dtypes.items()},
        time_min=frame["applied_at"].min(),
        time_max=frame["applied_at"].max(),
        uri="",
        created_at=sealed,
    )
    DatasetCatalog(store).write(manifest, data)


@pytest.fixture
def history() -> MemoryStore:
    """Four versions of 2011's applications; the last two sealed after a drift of today (v4 wholly after it)."""
    store = MemoryStore()
    plan = [  # version, rows, concept, sealed, parent
        ("v1", 300, 0, DRIFT - timedelta(minutes=30), None),
        ("v2", 300, 0, DRIFT - timedelta(seconds=5), "v1"),
        ("v3", 100, 2, DRIFT + timedelta(seconds=10), "v2"),
        ("v4", 300, 2, DRIFT + timedelta(seconds=25), "v3"),
    ]
    start = HISTORY
    for i, (version, n, concept, sealed, parent) in enumerate(plan):
        put(store, version, agrawal(n, concept, seed=i, start=start), sealed, parent)
        start += timedelta(hours=n)
    return store


@pytest.fixture
def tracking(tmp_path):
    import mlflow
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    yield client, tmp_path
    mlflow.set_tracking_uri(previous)


def context(store: MemoryStore, tracking, models: tuple[str, ...] = ("oot", "drifted")) -> RunContext:
    """A run context on the test's own MLflow; each model's experiment keeps its artifacts in the test's tmp."""
    client, tmp = tracking
    for name in models:
        client.create_experiment(f"unit/{name}", artifact_location=str(tmp / "artifacts" / name))
    return RunContext(
        catalog=DatasetCatalog(store),
        mlflow=client,
        datasets_dir=DATASETS,
        code_version="test",
        experiment_prefix="unit",
        importance_repeats=1,
    )


def request(model: str, **fields) -> TrainModel:
    return TrainModel(model_name=model, dataset="loans", producer="test", **fields)


def run_once(ctx: RunContext, req: TrainModel) -> ModelTrained:
    outcome = train(ctx, req, [req], "label", lambda *_: None)
    assert isinstance(outcome, ModelTrained), outcome
    return outcome


def artifact(client, run_id: str, path: str, tmp: Path) -> pd.DataFrame:
    return pd.read_parquet(client.download_artifacts(run_id, path, str(tmp)))


def test_a_run_is_judged_on_its_latest_rows_and_records_exactly_what_it_trained_on(history, tracking):
    client, tmp = tracking
    ctx = context(history, tracking)
    everything = {**FAST, "window": {"max_rows": None}}
    trained = run_once(ctx, request("oot", params=everything))

    lineage = trained.lineage
    assert lineage.dataset_versions == ["v1", "v2", "v3", "v4"] and lineage.dataset_version == "v4"
    assert lineage.eval_slices == {"recent": "eval/recent.parquet"} and lineage.fingerprint
    assert {"accuracy", "balanced_accuracy", "log_loss", "baseline_accuracy", "baseline_log_loss"} <= set(
        trained.metrics
    )
    recent = artifact(client, trained.run_id, "eval/recent.parquet", tmp)
    columns = set(recent.columns)
    assert columns >= CONTRACT_COLUMNS and not {"__version", "__row", "__time", "income"} & columns  # raw records
    assert len(recent) == lineage.eval_rows == 250  # the latest quarter of 1,000 rows

    # the training data, read back by the one helper monitoring uses: every version, exactly the rows fit on
    data = training_data_of_run(client, client.get_run(trained.run_id))
    assert data is not None and data.versions == ("v1", "v2", "v3", "v4") and data.row_count == lineage.train_rows
    rows = load_training_data(ctx.catalog.load, data)
    assert len(rows) == 750 and rows["applied_at"].max() < recent["applied_at"].min()
    assert ROWS_ARTIFACT in {a.path for a in client.list_artifacts(trained.run_id, "training_data")}

    # monitoring's reference is that training data, computed with the run's pinned feature set
    client.create_registered_model("oot")
    version = client.create_model_version("oot", trained.model_uri, trained.run_id)
    client.set_registered_model_alias("oot", "champion", version.version)
    reference = load_reference(client, ctx.catalog, DATASETS, "oot")
    assert reference is not None and reference.dataset_version == "v1,v2,v3,v4"
    assert len(reference.features["salary"]) == 750
    assert sorted(reference.features["salary"]) == sorted(rows["salary"].astype(float))


def test_an_identical_request_is_answered_by_the_earlier_run_and_a_changed_one_trains_again(history, tracking):
    client, _ = tracking
    ctx = context(history, tracking)
    first = run_once(ctx, request("oot", params=FAST))
    again = run_once(ctx, request("oot", params=FAST, trigger="schedule"))
    assert again.repeat and not first.repeat
    assert (again.run_id, again.model_uri, again.lineage) == (first.run_id, first.model_uri, first.lineage)
    assert again.metrics == first.metrics
    experiment = client.get_experiment_by_name("unit/oot").experiment_id
    assert len(client.search_runs([experiment])) == 1

    other_req = request("oot", params={**FAST, "seed": 7})
    other = run_once(ctx, other_req)
    assert not other.repeat and other.run_id != first.run_id
    assert other.lineage.fingerprint != first.lineage.fingerprint
    tags = client.get_run(other.run_id).data.tags
    assert tags[FINGERPRINT_TAG] == other.lineage.fingerprint

    # the very same request again (its outcome lost to a crash): its own run, not a repeat, so it is registered
    redelivered = run_once(ctx, other_req)
    assert redelivered.run_id == other.run_id and not redelivered.repeat
    assert len(client.search_runs([experiment])) == 2


def test_a_drift_retrain_on_history_keeps_pre_drift_rows_and_is_also_judged_on_them(history, tracking):
    client, tmp = tracking
    ctx = context(history, tracking)
    drift = request("drifted", trigger="drift", occurred_at=DRIFT, params={**FAST, "window": {"on_drift": "keep"}})
    trained = run_once(ctx, drift)

    window = trained.lineage.window
    assert window["drift"] == "keep" and window["on_drift"] == "keep" and window["fresh_wait"] == "timed_out"
    assert trained.lineage.eval_slices == {"recent": "eval/recent.parquet", "before": "eval/before.parquet"}
    before = artifact(client, trained.run_id, "eval/before.parquet", tmp)
    recent = artifact(client, trained.run_id, "eval/recent.parquet", tmp)
    assert len(recent) == 250 and window["before_rows"] == len(before) > 0
    data = training_data_of_run(client, client.get_run(trained.run_id))
    trained_on = set(load_training_data(ctx.catalog.load, data)["applicant_id"])
    assert not trained_on & set(before["applicant_id"]) and not trained_on & set(recent["applicant_id"])
    # v1 and v2 (and v3, whose buffer began before the drift) are "before"; their rows are from 2011
    pre = set().union(*(set(ctx.catalog.load("loans", v)["applicant_id"]) for v in ("v1", "v2", "v3")))
    assert set(before["applicant_id"]) <= pre
    assert any(k.startswith("before.") for k in client.get_run(trained.run_id).data.metrics)

    only_after = run_once(ctx, drift.model_copy(update={"params": FAST}))  # the loans spec: after_drift
    assert only_after.lineage.window["drift"] == "after_drift"
    assert only_after.lineage.train_rows + only_after.lineage.eval_rows == 300  # v4 alone


def test_a_run_logged_before_the_record_is_read_from_its_tags_every_row_counting(history, tracking):
    import mlflow

    client, tmp = tracking
    experiment = client.create_experiment("unit/legacy", artifact_location=str(tmp / "artifacts" / "legacy"))
    with mlflow.start_run(
        experiment_id=experiment, tags={"flywheel.dataset": "loans", "flywheel.dataset_version": "v1,v2"}
    ) as run:
        pass
    data = training_data_of_run(client, client.get_run(run.info.run_id))
    assert data is not None and data.versions == ("v1", "v2") and data.rows is None
    assert len(load_training_data(DatasetCatalog(history).load, data)) == 600


def test_a_run_fits_scores_and_logs_with_the_native_threads_it_is_given(history, tracking, monkeypatch):
    """More OpenMP threads than free cores spin: beside a busy stack a 0.2 s fit took 9 s (``fit_threads``)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from flywheel.training import runner

    def threads() -> set[int]:
        return {pool["num_threads"] for pool in threadpool_info()}

    seen = []

    def spying(stage):
        def within(*args, **kwargs):
            seen.append(threads())
            return stage(*args, **kwargs)

        return within

    for name in ("fit_and_evaluate", "log_run"):  # the fit and its scoring, then MLflow's signature and save
        monkeypatch.setattr(runner, name, spying(getattr(runner, name)))
    with threadpool_limits(limits=2):
        run_once(replace(context(history, tracking), fit_threads=1), request("oot", params=FAST))
        assert threads() == {2}  # the caller's limits, back
    assert seen == [{1}, {1}], seen
