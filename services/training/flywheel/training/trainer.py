"""Fitting and evaluating one model on its window of data: pure computation, no I/O.

Everything random is seeded from the spec, so the same rows, spec and seed give
the same model and the same metrics. The evaluation is out of time: the latest rows of
the window (by event time) are held out, never a random sample of them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.inspection import permutation_importance

from flywheel.common.evaluation import label_type, score_model, task_of
from flywheel.common.featuresets import FeatureSet
from flywheel.common.modelspec import ModelSpec
from flywheel.training.window import INTERNAL, ROW, TIME, VERSION, WindowError, event_times, split_rows

Progress = Callable[[str, float], None]


class TrainingError(ValueError):
    """The run cannot produce a model from this data (a reason for ``training.failed``)."""


@dataclass
class Trained:
    """A fitted model, its out-of-time evaluation and what it learnt from."""

    model: Any
    metrics: dict[str, float]
    x_train: pd.DataFrame
    x_eval: pd.DataFrame
    y_eval: pd.Series
    importance: dict[str, float] = field(default_factory=dict)
    importance_kind: str = ""
    slices: dict[str, pd.DataFrame] = field(default_factory=dict)  # name -> raw labelled records held out
    slice_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    train_rows: pd.DataFrame | None = None  # the rows fit on: version, row
    window: dict[str, Any] = field(default_factory=dict)


def labelled(frame: pd.DataFrame, label: str) -> pd.DataFrame:
    """Rows whose label is known; labels arrive late, so some may not be."""
    if label not in frame.columns:
        raise TrainingError(f"label column {label!r} is not in the data (columns: {sorted(frame.columns)})")
    return frame[frame[label].notna()]


def prepared(frame: pd.DataFrame, spec: ModelSpec, features: FeatureSet) -> pd.DataFrame:
    """The labelled rows, each with its version, its position in it, and its event time."""
    rows = labelled(frame, spec.label)
    if len(rows) < spec.min_rows:
        raise TrainingError(f"too few labelled rows: {len(rows)} < {spec.min_rows}")
    extra = {}
    if VERSION not in rows.columns:  # a plain frame: one anonymous version
        extra = {VERSION: "", ROW: range(len(rows))}
    rows = rows.assign(**extra)
    return rows.assign(**{TIME: event_times(rows, features.timestamp)}).reset_index(drop=True)


def fit_and_evaluate(
    frame: pd.DataFrame,
    spec: ModelSpec,
    features: FeatureSet,
    *,
    after: set[str] | None = None,
    importance_repeats: int = 5,
    progress: Progress = lambda stage, fraction: None,
) -> Trained:
    """Choose the window, split it by time, fit the spec's estimator, and score it on the latest rows.

    ``after``: on a drift retrain, the versions ingested after the drift (see ``window.split_rows``).
    Metrics are the candidate's on ``recent`` plus ``baseline_<metric>``, those of "always the
    majority class of the training rows" (regression: their mean) on the same slice.
    """
    try:
        split = split_rows(prepared(frame, spec, features), spec, after)
    except WindowError as exc:
        raise TrainingError(str(exc)) from exc
    y = label_values(split.train, spec)
    if len(np.unique(y)) < 2:
        what = "value" if spec.task == "regression" else "class"
        raise TrainingError(f"label {spec.label!r} has one {what} only ({np.unique(y).tolist()}) in the training rows")
    if spec.shuffle_labels:  # only the training labels: the evaluation stays honest
        y = np.random.default_rng(spec.seed).permutation(y)
    progress("features", 0.1)
    x_train = features.frame(split.train.reset_index(drop=True))
    progress("fitting", 0.3)
    model = fit(spec, x_train, y, split.sample_weight)
    check_task(model, spec)
    progress("evaluating", 0.7)
    baseline = trivial_baseline(spec).fit(x_train, y)
    scored = {name: score_slice(model, baseline, rows, spec, features) for name, rows in split.slices().items()}
    x_eval, y_eval, metrics = scored["recent"]
    importance, kind = feature_importance(model, x_eval, y_eval, spec, importance_repeats)
    progress("evaluated", 0.8)
    return Trained(
        model=model,
        metrics=metrics,
        x_train=x_train,
        x_eval=x_eval,
        y_eval=pd.Series(y_eval, name=spec.label, index=x_eval.index),
        importance=importance,
        importance_kind=kind,
        slices={name: rows.drop(columns=list(INTERNAL)) for name, rows in split.slices().items()},
        slice_metrics={name: figures for name, (_, _, figures) in scored.items()},
        train_rows=split.train[[VERSION, ROW]].rename(columns={VERSION: "version", ROW: "row"}),
        window=split.record,
    )


def fit(spec: ModelSpec, x: pd.DataFrame, y: np.ndarray, sample_weight: np.ndarray | None) -> Any:
    """The spec's estimator fitted; with weights, passed to the estimator (the last step of a pipeline)."""
    model = spec.build()
    if sample_weight is None:
        return model.fit(x, y)
    final = model.steps[-1] if hasattr(model, "steps") else None
    estimator = final[1] if final else model
    if "sample_weight" not in inspect.signature(estimator.fit).parameters:
        raise TrainingError(f"{spec.estimator.path} takes no sample_weight; drop window.half_life")
    key = f"{final[0]}__sample_weight" if final else "sample_weight"
    return model.fit(x, y, **{key: sample_weight})


def score_slice(
    model: Any, baseline: Any, rows: pd.DataFrame, spec: ModelSpec, features: FeatureSet
) -> tuple[pd.DataFrame, np.ndarray, dict[str, float]]:
    """A slice's features, labels, the model's metrics and the baseline's (``baseline_<metric>``)."""
    x = features.frame(rows.reset_index(drop=True))
    y = label_values(rows, spec)
    own = score_model(model, x, y)
    trivial = score_model(baseline, x, y)
    return x, y, {**own, **{f"baseline_{k}": v for k, v in trivial.items()}}


def label_values(rows: pd.DataFrame, spec: ModelSpec) -> np.ndarray:
    """The label column as the estimator learns it: class numbers, or a regression model's values."""
    return rows[spec.label].astype(label_type(spec.task)).to_numpy()


def trivial_baseline(spec: ModelSpec) -> Any:
    """What any model must beat: always the majority class of the training rows, or their mean."""
    return DummyRegressor(strategy="mean") if spec.task == "regression" else DummyClassifier(strategy="most_frequent")


def check_task(model: Any, spec: ModelSpec) -> None:
    """The estimator answers what the spec's task asks: a value (a regressor), or classes with probabilities."""
    if spec.task == "regression" and task_of(model) != "regression":
        raise TrainingError(f"{spec.estimator.path} is not a regressor; task: regression needs one")
    if spec.task == "classification" and not hasattr(model, "predict_proba"):
        raise TrainingError(f"{spec.estimator.path} has no predict_proba; serving needs probabilities")


def feature_importance(
    model: Any, x: pd.DataFrame, y: Any, spec: ModelSpec, repeats: int
) -> tuple[dict[str, float], str]:
    """The model's own importances where it has them, else permutation importance on the eval split."""
    own = getattr(model, "feature_importances_", None)
    if own is not None:
        return {n: float(v) for n, v in zip(x.columns, own, strict=True)}, "impurity"
    scoring = "neg_mean_absolute_error" if spec.task == "regression" else "accuracy"
    result = permutation_importance(model, x, y, n_repeats=repeats, random_state=spec.seed, scoring=scoring)
    return {n: float(v) for n, v in zip(x.columns, result.importances_mean, strict=True)}, "permutation"
