"""Training's pure parts: the model spec, fitting and evaluation, and drift-to-request."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from river.datasets import synth

from flywheel.common.evaluation import METRICS
from flywheel.common.featuresets import load_feature_set
from flywheel.common.modelspec import ModelSpec, load_model_spec
from flywheel.schemas import DriftDetected
from flywheel.training.codeversion import source_hash
from flywheel.training.handlers import request_from_drift
from flywheel.training.trainer import TrainingError, fit_and_evaluate

DATASETS = Path(__file__).resolve().parents[2] / "datasets"


def rows(n: int, function: int = 0, seed: int = 1, perturbation: float = 0.0) -> pd.DataFrame:
    stream = synth.Agrawal(classification_function=function, seed=seed, perturbation=perturbation)
    return pd.DataFrame([{**x, "approved": int(y)} for x, y in stream.take(n)])


@pytest.fixture(scope="module")
def spec() -> ModelSpec:
    return load_model_spec(DATASETS, "loans").with_overrides({"max_iter": 50})


@pytest.fixture(scope="module")
def features():
    return load_feature_set(DATASETS, "loans")


def test_the_loans_spec_names_model_feature_set_label_and_estimator(spec):
    assert (spec.model_name, spec.dataset, spec.feature_set, spec.label) == (
        "loans-approval",
        "loans",
        "loans_features",
        "approved",
    )
    assert spec.window.max_rows == 1000 and spec.window.on_drift == "after_drift"
    assert spec.holdout == 0.25 and spec.estimator.params["max_iter"] == 50
    assert type(spec.build()).__name__ == "HistGradientBoostingClassifier"


def test_a_pipeline_spec_builds_a_seeded_pipeline():
    spec = ModelSpec(
        model_name="m",
        dataset="loans",
        label="approved",
        estimator={"path": "sklearn.linear_model.LogisticRegression"},
        pipeline=[
            {"path": "sklearn.impute.SimpleImputer"},
            {"name": "scale", "path": "sklearn.preprocessing.StandardScaler"},
        ],
        seed=3,
    )
    pipeline = spec.build()
    assert [name for name, _ in pipeline.steps] == ["step0", "scale", "estimator"]
    assert pipeline.steps[-1][1].random_state == 3


def test_missing_spec_and_foreign_paths_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model spec"):
        load_model_spec(tmp_path, "loans")
    with pytest.raises(ValueError, match="plain name"):
        load_model_spec(DATASETS, "loans", "../loans/model")


def test_the_same_data_and_spec_give_the_same_model_and_metrics(spec, features):
    data = rows(800, function=8, perturbation=0.1)
    first, second = (fit_and_evaluate(data, spec, features) for _ in range(2))
    assert first.metrics == second.metrics
    assert first.importance == second.importance and first.importance_kind == "permutation"
    np.testing.assert_array_equal(first.model.predict_proba(first.x_eval), second.model.predict_proba(second.x_eval))
    assert list(first.x_train.columns) == features.names


def test_hgb_on_agrawal_passes_the_default_gates_and_shuffled_labels_do_not(spec, features):
    good = fit_and_evaluate(rows(1000, function=0), spec, features)
    bad = fit_and_evaluate(rows(1000, function=0), spec.with_overrides({"shuffle_labels": True}), features)
    assert good.metrics["accuracy"] >= 0.85 and good.metrics["f1"] >= 0.80
    assert bad.metrics["accuracy"] < 0.85
    assert set(good.metrics) == set(METRICS) | {f"baseline_{m}" for m in METRICS}
    assert (
        good.metrics["baseline_balanced_accuracy"] == 0.5
        and good.metrics["log_loss"] < good.metrics["baseline_log_loss"]
    )


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (rows(20), "too few labelled rows"),
        (rows(200).assign(approved=1), "one class"),
        (rows(200).drop(columns=["approved"]), "label column"),
        (rows(200).assign(approved=None), "too few labelled rows"),
    ],
)
def test_data_that_cannot_train_a_model_fails_with_a_reason(spec, features, frame, reason):
    with pytest.raises(TrainingError, match=reason):
        fit_and_evaluate(frame, spec, features)


def test_only_retrain_drift_becomes_a_request_caused_by_it():
    drift = DriftDetected(dataset="loans", model_name="m", kind="concept", window_size=300, retrain=True, producer="t")
    request = request_from_drift(drift)
    assert request.trigger == "drift" and request.causation_id == drift.event_id
    assert request.correlation_id == drift.correlation_id and request.causation_chain == [str(drift.event_id)]
    assert request_from_drift(drift.model_copy(update={"retrain": False})) is None
    assert request.occurred_at == drift.occurred_at  # dated at the drift: "after the drift" is on its clock


def test_source_hash_changes_with_the_source(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    before = source_hash([tmp_path])
    assert source_hash([tmp_path]) == before
    (tmp_path / "a.py").write_text("x = 2\n")
    assert source_hash([tmp_path]) != before


def bike_hours(start: int, stop: int) -> pd.DataFrame:
    """The bike-sharing replay's hours ``[start, stop)`` with their labels, as training reads a version."""
    from flywheel.demo.replay import Replay

    replay = Replay.load(DATASETS, "bikeshare")
    rows = [r for r in replay.phase("history", "t")] + [r for r in replay.phase("drifted", "t")]
    frame = pd.DataFrame([{**r.record, "bikers": r.label} for r in rows if start <= r.index < stop])
    return frame.assign(hour=pd.to_datetime(frame["hour"], utc=True))


def test_a_regression_spec_trains_a_regressor_judged_against_the_mean_out_of_time():
    spec, features = load_model_spec(DATASETS, "bikeshare"), load_feature_set(DATASETS, "bikeshare")
    good = fit_and_evaluate(bike_hours(0, 1337), spec, features, importance_repeats=1)
    assert spec.task == "regression" and set(good.metrics) == {
        "rmse",
        "mae",
        "r2",
        "baseline_rmse",
        "baseline_mae",
        "baseline_r2",
    }
    assert good.metrics["mae"] < 0.6 * good.metrics["baseline_mae"] and good.metrics["r2"] > 0.5, good.metrics
    assert good.y_eval.dtype == float and len(good.slices["recent"]) == len(good.x_eval)
    useless = fit_and_evaluate(bike_hours(0, 1337), spec.with_overrides({"shuffle_labels": True}), features)
    assert useless.metrics["rmse"] > 0.95 * useless.metrics["baseline_rmse"], useless.metrics


def test_a_task_its_estimator_cannot_answer_fails_with_a_reason():
    features = load_feature_set(DATASETS, "bikeshare")
    spec = load_model_spec(DATASETS, "bikeshare").model_copy(
        update={"estimator": load_model_spec(DATASETS, "rain").estimator}
    )
    with pytest.raises(TrainingError, match="not a regressor"):
        fit_and_evaluate(bike_hours(0, 600), spec, features)
